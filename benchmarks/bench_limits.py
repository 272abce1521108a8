"""Convergence of the n-point optimum to the limit law: KS distance per utility for n = 10 .. 10,000.

Run: .venv/bin/python benchmarks/bench_limits.py [--max-n 10000]
"""

import argparse
import time

from rewardcollapse import describe_law, ks_distance, limit_distribution, optimal_rewards

UTILITIES = ["x", "x^0.5", "log", "-x^-0.5", "-1/x", "logsigmoid"]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-n", type=int, default=10000)
    args = parser.parse_args()
    sizes = [n for n in (10, 100, 1000, 10000) if n <= args.max_n]
    print("KS distance between the empirical law of the n-point optimal rewards and the limit law\n")
    print("| utility | limit law | " + " | ".join(f"n = {n}" for n in sizes) + " | seconds |")
    print("|---|---|" + "---|" * len(sizes) + "---|")
    for spec in UTILITIES:
        start = time.perf_counter()
        law = limit_distribution(spec)
        name = describe_law(law)
        cells = [f"{ks_distance(optimal_rewards(n, spec).rewards, law):.4f}" for n in sizes]
        print(f"| {spec} | {name} | " + " | ".join(cells) + f" | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
