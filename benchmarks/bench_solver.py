"""Speed and accuracy of `optimal_rewards` against CVXPY on the same problem, then our scaling alone.

Run: .venv/bin/python benchmarks/bench_solver.py [--max-n 10000] [--utility log]
Prints two tables: (1) n = 20, 50, 100 side by side with every installed CVXPY conic solver; (2) our solver alone
up to --max-n with time and peak memory of numpy allocations (tracemalloc).
"""

import argparse
import time
import tracemalloc
import warnings

import cvxpy as cp
import numpy as np

from rewardcollapse import optimal_rewards

SCS_TIME_LIMIT = 120  # seconds; SCS's first-order iterations slow to minutes from n = 100 on
CVXPY_SOLVERS = [s for s in ("CLARABEL", "SCS", "ECOS") if s in cp.installed_solvers()]


def cvxpy_problem(n, spec):
    r = cp.Variable(n)
    i, j = np.triu_indices(n, k=1)
    x = r[i] - r[j]
    objective = {"log": cp.sum(cp.log(x)), "-1/x": -cp.sum(cp.inv_pos(x)), "x^0.5": cp.sum(cp.power(x, 0.5))}[spec]
    return cp.Problem(cp.Maximize(objective), [r >= 0, r <= 1, x >= 0]), r


def timed(fn, repeat):
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def compare(spec):
    print(f"\n## optimal_rewards vs CVXPY, U = {spec} (time: best of runs; error: max |r - r_ours|)\n")
    columns = " | ".join(f"{s} (s) | {s} error | {s} status" for s in CVXPY_SOLVERS)
    print(f"| n | ours (s) | ours KKT residual | {columns} |")
    print("|---" * (3 + 3 * len(CVXPY_SOLVERS)) + "|")
    ratios = {}
    for n in (20, 50, 100):
        ours_time, ours = timed(lambda n=n: optimal_rewards(n, spec), repeat=5)
        cells = [f"{n}", f"{ours_time:.4f}", f"{ours.residual:.1e}"]
        for solver in CVXPY_SOLVERS:
            problem, r = cvxpy_problem(n, spec)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    options = {"time_limit_secs": SCS_TIME_LIMIT} if solver == "SCS" else {}
                    elapsed, _ = timed(lambda p=problem, s=solver, o=options: p.solve(solver=s, **o), repeat=1)
                status = problem.status
                error = float(np.max(np.abs(r.value - ours.rewards))) if r.value is not None else np.nan
            except cp.error.SolverError:
                elapsed, status, error = np.nan, "solver failed", np.nan
            ok = status == "optimal" and error < 1e-4
            if ok:
                ratios.setdefault(n, []).append((elapsed, solver))
            cells += [f"{elapsed:.3f}", f"{error:.1e}", status if ok else f"**{status}, inaccurate**"]
        print("| " + " | ".join(cells) + " |")
    if 100 in ratios:
        best_time, best_solver = min(ratios[100])
        ours_time, _ = timed(lambda: optimal_rewards(100, spec), repeat=5)
        print(f"\nn = 100: best working CVXPY solver {best_solver} takes {best_time:.3f} s, ours {ours_time:.4f} s: "
              f"{best_time / ours_time:.0f}x faster")  # fmt: skip
    else:
        print("\nn = 100: no CVXPY solver returned an accurate optimum")


def scaling(spec, max_n):
    print(f"\n## Our solver alone, U = {spec}\n")
    print("| n | time (s) | iterations | KKT residual | peak numpy memory (MB) |")
    print("|---|---|---|---|---|")
    for n in (100, 1000, 3000, 10000):
        if n > max_n:
            break
        repeat = 5 if n <= 1000 else 1
        elapsed, result = timed(lambda n=n: optimal_rewards(n, spec), repeat=repeat)
        # Memory in a separate run: tracemalloc slows numpy allocation and would distort the timing.
        tracemalloc.start()
        optimal_rewards(n, spec)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"| {n} | {elapsed:.3f} | {result.iterations} | {result.residual:.1e} | {peak / 1e6:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-n", type=int, default=10000)
    parser.add_argument("--utility", default="log", choices=["log", "-1/x", "x^0.5"])
    args = parser.parse_args()
    optimal_rewards(10, args.utility)  # warm imports
    compare(args.utility)
    scaling(args.utility, args.max_n)


if __name__ == "__main__":
    main()
