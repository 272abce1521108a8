import json
import os
import socket
import stat
import subprocess
import sys

import pytest
import torch

from rewardcollapse import InputValueError, OutputLockedError
from rewardcollapse._files import (
    LOCK_FILE,
    atomic_directory,
    atomic_path,
    atomic_write,
    locked_output_file,
    locked_output_folder,
    write_text_atomic,
)
from rewardcollapse.training.precision import choose_precision, native_cpu_bf16

from .conftest import kill, run_until_ready

AVX2 = {"avx2": True, "avx512_bf16": False, "amx_bf16": False}
AVX512_BF16 = {"avx2": True, "avx512_bf16": True, "amx_bf16": False}
AMX = {"avx2": True, "avx512_bf16": True, "amx_bf16": True}


@pytest.fixture
def cpu_with(monkeypatch):
    """Pretend to be a CPU-only machine with the given capability flags, running ATen's ``kernels``."""

    def patch(capabilities, kernels="AVX512"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: dict(capabilities))
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: kernels)

    return patch


@pytest.fixture
def cuda_with(monkeypatch):
    def patch(bf16):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Test GPU")

    return patch


def test_auto_picks_bf16_only_where_the_cpu_computes_it(cpu_with):
    cpu_with(AVX2)
    chosen = choose_precision("auto")
    assert chosen.name == "fp32" and "emulated" in chosen.reason and native_cpu_bf16() is None
    assert chosen.training_arguments == {"bf16": False, "fp16": False, "use_cpu": True}
    cpu_with(AVX512_BF16)
    chosen = choose_precision("auto")
    assert (chosen.name, chosen.reason) == ("bf16", "native AVX512-BF16")
    assert chosen.training_arguments["bf16"] and "bfloat16 autocast on cpu" in chosen.describe()
    cpu_with(AMX)
    assert choose_precision("auto").reason == "native AMX"


def test_kernels_capped_below_avx512_make_bf16_emulated_whatever_the_cpu_has(cpu_with):
    # ATEN_CPU_CAPABILITY=avx2 (the slowest CPU's stand-in) runs bf16 through AVX2 kernels: emulated, not native.
    cpu_with(AMX, kernels="AVX2")
    assert native_cpu_bf16() is None and choose_precision("auto").name == "fp32"
    with pytest.raises(ValueError, match="neither AMX nor AVX512-BF16, so bf16 is emulated"):
        choose_precision("bf16")
    cpu_with(AVX512_BF16, kernels="AVX512_BF16")  # a hypothetical finer level still counts as AVX-512
    assert native_cpu_bf16() == "AVX512-BF16"


def test_explicit_precisions_and_their_errors(cpu_with, cuda_with):
    cpu_with(AVX2)
    assert choose_precision("fp32").name == "fp32"
    with pytest.raises(ValueError, match="neither AMX nor AVX512-BF16, so bf16 is emulated"):
        choose_precision("bf16")
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        choose_precision("fp16")
    with pytest.raises(ValueError, match="`precision` must be one of auto, fp32, bf16, fp16, got 'half'"):
        choose_precision("half")
    cpu_with(AMX)
    assert choose_precision("bf16").name == "bf16"
    cuda_with(bf16=True)
    chosen = choose_precision("auto")
    assert (chosen.name, chosen.device) == ("bf16", "cuda") and "use_cpu" not in chosen.training_arguments
    cuda_with(bf16=False)
    assert choose_precision("auto").name == "fp32" and choose_precision("fp16").training_arguments["fp16"]
    with pytest.raises(ValueError, match="Test GPU does not support bfloat16"):
        choose_precision("bf16")


def test_autocast_of_each_precision_runs_on_cpu():
    x = torch.ones(2, 2)
    with choose_precision("fp32", device="cpu").autocast():
        assert (x @ x).dtype == torch.float32


def test_atomic_write_replaces_whole_or_leaves_the_old_file(tmp_path):
    target = tmp_path / "out" / "file.jsonl"
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("half of a new fi")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n" and sorted(p.name for p in target.parent.iterdir()) == ["file.jsonl"]
    with atomic_write(target) as handle:
        handle.write("new\n")
    assert target.read_text() == "new\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    with atomic_path(tmp_path / "figure.png") as temporary:
        assert temporary.suffix == ".png" and temporary.parent == tmp_path
        temporary.write_bytes(b"png")
    assert (tmp_path / "figure.png").read_bytes() == b"png"
    with pytest.raises(ValueError, match="`mode` must be 'w' or 'wb'"), atomic_write(target, "a"):
        pass


def test_atomic_directory(tmp_path):
    final = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt), atomic_directory(final) as partial:
        (partial / "weights").write_text("half")
        raise KeyboardInterrupt
    assert not final.exists() and not partial.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".model.partial-{dead.stdout.strip()}-abc"  # left by a killed writer: cleared
    orphan.mkdir()
    (orphan / "stale").write_text("x")
    alive = tmp_path / f".model.partial-{os.getppid()}-abc"  # another writer still at work: left alone
    alive.mkdir()
    with atomic_directory(final) as partial:
        assert list(partial.iterdir()) == [] and partial.parent == tmp_path
        (partial / "weights").write_text("whole")
    assert (final / "weights").read_text() == "whole" and not partial.exists()
    assert not orphan.exists() and alive.exists()
    with atomic_directory(final) as partial:
        (partial / "weights2").write_text("new")
    assert [p.name for p in final.iterdir()] == ["weights2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", alive.name])


def test_atomic_directory_two_writers_each_finish_whole(tmp_path):
    final = tmp_path / "out"
    with atomic_directory(final) as first, atomic_directory(final) as second:
        assert first != second
        (first / "a").write_text("first")
        (second / "b").write_text("second")
    assert [p.name for p in final.iterdir()] == ["a"]  # the last to finish (the outer one) stays, whole


def test_score_head_keeps_float32_under_bf16_autocast(tiny_model):
    from rewardcollapse.training.precision import score_head_in_float32

    model = tiny_model().eval()
    ids = torch.randint(1000, 2000, (3, 7))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(input_ids=ids).logits.dtype == torch.bfloat16
    assert score_head_in_float32(score_head_in_float32(model)) is model  # idempotent: one hook
    features = {}
    model.classifier.register_forward_pre_hook(lambda module, args: features.update(x=args[0]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids).logits
    assert logits.dtype == torch.float32
    expected = features["x"].float() @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-6)
    logits.sum().backward()
    assert model.classifier.weight.grad.dtype == torch.float32
    with torch.no_grad():
        assert model(input_ids=ids).logits.dtype == torch.float32  # no autocast: untouched
    with pytest.raises(ValueError, match="no linear score head with 1 output"):
        score_head_in_float32(torch.nn.Sequential(torch.nn.Linear(3, 2)))


def test_a_killed_writer_leaves_the_previous_file_whole(tmp_path):
    target = tmp_path / "rewards.jsonl"
    target.write_text("previous\n")
    script = f"""
        import time
        from rewardcollapse._files import atomic_write
        with atomic_write({str(target)!r}) as handle:
            for i in range(100000):
                handle.write("new line\\n")
                if i == 1000:
                    handle.flush()
                    print("ready", flush=True)
                    time.sleep(60)
    """
    writer = run_until_ready(script, tmp_path)
    kill(writer)
    assert target.read_text() == "previous\n"
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].startswith(".rewards.jsonl.") and ".partial" in leftovers[0]
    assert leftovers[0].startswith(f".rewards.jsonl.partial-{writer.pid}-")  # named after its writer
    write_text_atomic(target, "next\n")  # the next write to the path removes what the dead writer left
    assert [p.name for p in tmp_path.iterdir()] == ["rewards.jsonl"] and target.read_text() == "next\n"


def test_two_writers_to_one_path_each_leave_a_whole_file(tmp_path):
    from rewardcollapse._files import atomic_write

    target = tmp_path / "out.jsonl"
    with atomic_write(target) as first, atomic_write(target) as second:
        first.write("first\n" * 1000)
        second.write("second\n" * 10)
    assert target.read_text() == "first\n" * 1000  # the last to finish; never a mix


def test_writing_through_a_symbolic_link_keeps_the_link(tmp_path):
    from rewardcollapse._files import write_text_atomic

    target = tmp_path / "real.jsonl"
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    write_text_atomic(link, "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"


def hold(path, kind, cwd):
    """A process that holds the lock of ``path`` (a folder or a file) and waits to be killed."""
    script = f"""
        import time
        from rewardcollapse._files import locked_output_{kind}
        with locked_output_{kind}({str(path)!r}, "--output"):
            print("ready", flush=True)
            time.sleep(60)
    """
    return run_until_ready(script, cwd)


def test_a_second_writer_is_refused_at_once_naming_the_holder_and_a_killed_holders_lock_is_taken_over(tmp_path):
    output = tmp_path / "out"
    holder = hold(output, "folder", tmp_path)
    try:
        assert json.loads((output / LOCK_FILE).read_text())["pid"] == holder.pid
        for _ in range(2):  # refused each time, at once, the lock left as it was
            with pytest.raises(OutputLockedError) as refused, locked_output_folder(output, "--output"):
                raise AssertionError("the body of a refused writer ran")
            message = str(refused.value)
            assert "\n" not in message and f"pid {holder.pid} on {socket.gethostname()}" in message
            assert message.startswith(f"`--output` {str(output)!r} is being written by another process")
    finally:
        kill(holder)
    with locked_output_folder(output, "--output") as folder:  # the dead holder's lock is taken over
        assert folder == output and json.loads((output / LOCK_FILE).read_text())["pid"] == os.getpid()
        (folder / "model.safetensors").write_text("weights")
    assert [p.name for p in output.iterdir()] == ["model.safetensors"]  # the lock file goes with the job


def test_a_file_lock_holds_that_file_only(tmp_path):
    scores = tmp_path / "scores.jsonl"
    holder = hold(scores, "file", tmp_path)
    try:
        with pytest.raises(OutputLockedError, match=rf"`--output` '.*scores.jsonl' .*\(pid {holder.pid} on "):
            with locked_output_file(scores, "--output"):
                pass
        with locked_output_file(tmp_path / "other.jsonl", "--output") as other:  # another file of the same folder
            write_text_atomic(other, "x\n")
    finally:
        kill(holder)
    with locked_output_file(scores, "--output") as final:
        write_text_atomic(final, "whole\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.jsonl", "scores.jsonl"]


def test_a_lock_file_removed_by_its_ending_holder_before_it_was_locked_is_not_taken(tmp_path, monkeypatch):
    import rewardcollapse._files as files

    output = tmp_path / "out"
    output.mkdir()
    real_lock = files._lock

    def holder_ends_between_open_and_lock(descriptor):
        monkeypatch.setattr(files, "_lock", real_lock)
        (output / LOCK_FILE).unlink()  # what the holder does as it ends, while this process has the file open
        real_lock(descriptor)

    (output / LOCK_FILE).write_text("{}")
    monkeypatch.setattr(files, "_lock", holder_ends_between_open_and_lock)
    with locked_output_folder(output, "--output"):  # locks the file now at the path, not the removed one
        assert json.loads((output / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert list(output.iterdir()) == []


def test_a_failing_job_removes_the_folders_it_made_and_only_those(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    with pytest.raises(RuntimeError, match="model missing"), locked_output_file(deep / "out.jsonl", "--output"):
        raise RuntimeError("model missing")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "a").mkdir()
    with pytest.raises(KeyboardInterrupt), locked_output_folder(deep, "--output") as folder:
        (folder / "checkpoint-1").mkdir()  # what the job wrote stays, and the folders holding it
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt), locked_output_folder(tmp_path / "a" / "new", "--output"):
        raise KeyboardInterrupt
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "a",
        "a/b",
        "a/b/c",
        "a/b/c/checkpoint-1",
    ]


def test_a_lock_file_that_cannot_be_opened_is_named(tmp_path, monkeypatch):
    lock_file = tmp_path / LOCK_FILE
    real_open = os.open

    def read_only(path, flags, *args):  # as a lock file left by another user's killed job (and not run as root)
        if str(path) == str(lock_file):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(ValueError, match=r"cannot open its lock file .*\.rewardcollapse\.lock' \(Permission denied\)"):
        with locked_output_folder(tmp_path, "--output"):
            pass


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_lock_path_that_is_a_link_or_a_folder_is_refused_and_a_links_target_kept(tmp_path, kind):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    output = tmp_path / "out" / ("scores.jsonl" if kind == "file" else "")
    lock_file = output / LOCK_FILE if kind == "folder" else output.parent / ".scores.jsonl.lock"
    lock_file.parent.mkdir(parents=True)
    locked = locked_output_folder if kind == "folder" else locked_output_file
    lock_file.symlink_to(victim)
    with pytest.raises(InputValueError) as refused, locked(output, "--output"):
        raise AssertionError("the body ran")
    message = str(refused.value)
    assert f"its lock file {str(lock_file)!r} is not a plain file (a link or a folder); remove it" in message
    assert victim.read_text() == "precious\n" and lock_file.is_symlink()
    lock_file.unlink()
    lock_file.mkdir()
    with pytest.raises(InputValueError, match=r"is not a plain file .*; remove it"), locked(output, "--output"):
        raise AssertionError("the body ran")
    assert lock_file.is_dir()


def test_on_windows_a_leftovers_process_is_probed_without_os_kill(monkeypatch):
    # There os.kill(pid, 0) sends CTRL_C_EVENT to the process instead of probing it: psutil asks, or nothing is removed.
    import types

    import rewardcollapse._files as files

    def no_signal(pid, sig):
        raise AssertionError("os.kill must not be called on Windows")

    monkeypatch.setattr(files.os, "kill", no_signal)
    monkeypatch.setattr(files, "_WINDOWS", True)
    monkeypatch.setitem(sys.modules, "psutil", types.SimpleNamespace(pid_exists=lambda pid: pid == 12345))
    assert files._running(12345) and not files._running(54321)
    monkeypatch.setitem(sys.modules, "psutil", None)  # not installed: the leftovers are kept
    assert files._running(54321)
