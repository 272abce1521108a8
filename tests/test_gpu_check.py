"""benchmarks/gpu_check.py: its ``--tiny`` run on the CPU reports every section, and a failed check fails the run."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore")

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SECTIONS = ["exactness", "speed", "fsdp", "deepspeed_zero2", "deepspeed_zero3", "experiment"]


@pytest.fixture(scope="module")
def gpu_check():
    """benchmarks/gpu_check.py as a module, its folder on sys.path as when it runs as a script (bench_training)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        spec = importlib.util.spec_from_file_location("gpu_check", BENCHMARKS / "gpu_check.py")
        module = importlib.util.module_from_spec(spec)
        patch.setitem(sys.modules, "gpu_check", module)  # its dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module


@pytest.fixture(scope="module")
def tiny_run(gpu_check, tmp_path_factory):
    """One ``--tiny`` run: its exit status, gpu_check.json and gpu_check.md."""
    output = tmp_path_factory.mktemp("gpu_check")
    status = gpu_check.main(["--tiny", "--output", str(output)])
    return status, json.loads((output / "gpu_check.json").read_text()), (output / "gpu_check.md").read_text()


def test_tiny_run_passes_what_a_cpu_can_and_says_why_not_for_the_rest(gpu_check, tiny_run):
    status, report, table = tiny_run
    sections = report["sections"]
    assert status == 0 and report["mode"] == "tiny (CPU)"
    assert list(sections) == SECTIONS
    for name in ("exactness", "speed", "experiment"):
        assert sections[name]["status"] == "passed", sections[name]["figures"].get("traceback")
    for name in ("fsdp", "deepspeed_zero2", "deepspeed_zero3"):
        assert sections[name]["status"] == (
            "not run: needs CUDA (accelerate sets up FSDP/DeepSpeed only on accelerator devices)"
        )
    assert table.count("\n| ") == len(SECTIONS) + 1 and "| check | status | figures | seconds |" in table
    assert all(f"| {name} | {sections[name]['status']} |" in table for name in SECTIONS)


def test_exactness_covers_both_ways_and_both_families(tiny_run):
    figures = tiny_run[1]["sections"]["exactness"]["figures"]
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert figures["bf16"] == ("run" if bf16 else "not run: this CPU has no native bf16 (AVX512-BF16 or AMX)")
    for arch in ("qwen2", "llama"):
        for method in ("cache", "rows"):
            result = figures[f"{arch} float32 {method}"]
            assert result["passed"] and result["tokens_saved"] > 0.3
            assert max(result["score_max_abs"], result["loss_abs"]) <= 1e-5
            assert (f"{arch} bf16 {method}" in figures) == bf16


def test_speed_trains_the_same_prompts_three_ways(tiny_run):
    figures = tiny_run[1]["sections"]["speed"]["figures"]
    runs = figures["runs"]
    assert set(runs) == {"auto", "off", "TRL"} and figures["goal_met"] is None  # the goal is the 0.5B run's
    assert all(run["prompts_per_second"] > 0 and run["timed_steps"] == 1 for run in runs.values())
    # The same data and the same Bradley-Terry loss: the three trainings agree (float32, the layout exact).
    losses = [run["mean_loss"] for run in runs.values()]
    assert max(losses) - min(losses) < 1e-5
    assert runs["auto"]["tokens_saved"] > 0.3 and runs["off"]["tokens_saved"] is None
    assert figures["ratios"]["auto/off"] == pytest.approx(
        runs["auto"]["prompts_per_second"] / runs["off"]["prompts_per_second"]
    )


def test_experiment_reports_each_utilitys_collapse_index(tiny_run):
    indices = tiny_run[1]["sections"]["experiment"]["figures"]["collapse_index"]
    assert set(indices) == {"x", "prompt-aware"}
    assert all(math.isfinite(index) for index in indices.values())


def test_a_failed_or_crashed_check_fails_the_run(gpu_check, monkeypatch, tmp_path, capsys):
    def fails(sizes, output):
        return False, {"difference": 0.5}

    def crashes(sizes, output):
        raise RuntimeError("CUDA out of memory")

    def not_here(sizes, output):
        raise gpu_check.NotRun("no such device")

    checks = {"first": fails, "second": crashes, "third": not_here, "fourth": lambda sizes, output: (True, {})}
    monkeypatch.setattr(gpu_check, "CHECKS", checks)
    assert gpu_check.main(["--tiny", "--output", str(tmp_path)]) == 1
    sections = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]
    assert [sections[name]["status"] for name in checks] == ["failed", "failed", "not run: no such device", "passed"]
    assert sections["first"]["figures"] == {"difference": 0.5}
    assert sections["second"]["figures"]["error"] == "RuntimeError: CUDA out of memory"
    assert "| second | failed | RuntimeError: CUDA out of memory |" in capsys.readouterr().out


def test_without_cuda_or_tiny_it_says_so_and_exits_2(gpu_check, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--output", str(tmp_path / "out")]) == 2
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and "needs a CUDA GPU (or --tiny" in printed
    assert not (tmp_path / "out").exists()
