"""Scaling out: the ``accelerate launch`` files in configs/accelerate/ and FSDP against one process.

The files are read by accelerate's own config classes and launch parser, so a key accelerate does not know, a wrong
value or a header command that would not start ``rewardcollapse train`` fails here instead of on a GPU cluster.
"""

import itertools
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs" / "accelerate"
DISTRIBUTED_TYPES = {
    "ddp.yaml": "MULTI_GPU",
    "deepspeed_zero2.yaml": "DEEPSPEED",
    "deepspeed_zero3.yaml": "DEEPSPEED",
    "fsdp.yaml": "FSDP",
    "multinode.yaml": "MULTI_GPU",
}
NESTED = ("fsdp_config", "deepspeed_config")  # the blocks whose keys accelerate copies onto its launch options
WORDS = "the model reads every answer once and scores it so that longer answers rank higher here".split()


def launch_options() -> set[str]:
    """Every option ``accelerate launch`` takes: a key of fsdp_config or deepspeed_config must be one of them."""
    from accelerate.commands.launch import launch_command_parser

    return {action.dest for action in launch_command_parser()._actions}


def unknown_nested_keys(path: Path) -> list[str]:
    """Keys of the file's fsdp_config/deepspeed_config blocks that accelerate would not read.

    ``ClusterConfig`` refuses unknown top-level keys itself, but copies a nested block's keys onto the launch
    options without checking them, so a typo there (``fsdp_auto_wrap_polcy``) would be silently ignored.
    """
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    known = launch_options()
    return [f"{block}.{key}" for block in NESTED for key in getattr(config, block) if key not in known]


def header_commands(path: Path) -> list[list[str]]:
    """The ``accelerate launch ...`` commands of the file's header comment, continuation lines joined."""
    header = itertools.takewhile(lambda line: line.startswith("#"), path.read_text().splitlines())
    text = "\n".join(line[1:].strip() for line in header).replace("\\\n", " ")
    return [shlex.split(line) for line in text.splitlines() if line.startswith("accelerate launch ")]


def launch_environment(command: list[str], monkeypatch) -> tuple:
    """What ``accelerate launch`` makes of a header command: its options and the processes' environment.

    The same steps as ``accelerate.commands.launch.launch_command`` up to starting the processes (private helpers
    of accelerate: this is the code path the command runs). The port check is left out: the test machine's ports
    say nothing about the cluster's.
    """
    import accelerate.utils.launch
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    monkeypatch.setattr(accelerate.utils.launch, "is_port_in_use", lambda port: False)
    args = launch_command_parser().parse_args(command[2:])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return args, {key: value for key, value in env.items() if key.startswith(("ACCELERATE_", "FSDP_"))}


def use_environment(env: dict[str, str], monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith(("ACCELERATE_", "FSDP_"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def write_rankings(path: Path, n_prompts: int, k: int = 4) -> Path:
    with path.open("w") as handle:
        for p in range(n_prompts):
            answers = [" ".join(WORDS[(p + w) % len(WORDS)] for w in range(3 * (k - i))) for i in range(k)]
            row = {"prompt": f"Prompt number {p}: say something.", "responses": answers, "openness": float(p % 2)}
            handle.write(json.dumps(row) + "\n")
    return path


def test_the_folder_holds_the_documented_files():
    assert sorted(p.name for p in CONFIG_DIR.glob("*")) == sorted(DISTRIBUTED_TYPES)


@pytest.mark.parametrize("name", sorted(DISTRIBUTED_TYPES))
def test_accelerate_reads_every_key(name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    config = load_config_from_file(str(CONFIG_DIR / name))  # raises on an unknown top-level key or enum value
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type.value == DISTRIBUTED_TYPES[name]
    assert config.mixed_precision == "no"  # rewardcollapse's --precision chooses; see the files' headers
    assert unknown_nested_keys(CONFIG_DIR / name) == []


def test_a_typo_fails_the_check(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    text = (CONFIG_DIR / "fsdp.yaml").read_text()
    nested = tmp_path / "nested.yaml"
    nested.write_text(text.replace("fsdp_auto_wrap_policy:", "fsdp_auto_wrap_polcy:"))
    assert unknown_nested_keys(nested) == ["fsdp_config.fsdp_auto_wrap_polcy"]
    top = tmp_path / "top.yaml"
    top.write_text(text.replace("num_machines:", "num_machine:"))
    with pytest.raises(ValueError, match=r"unknown keys \(\['num_machine'\]\)"):
        load_config_from_file(str(top))


@pytest.mark.parametrize("name", sorted(DISTRIBUTED_TYPES))
def test_header_commands_launch_rewardcollapse_train(name, monkeypatch):
    from rewardcollapse.cli import command_parser

    commands = header_commands(CONFIG_DIR / name)
    assert len(commands) == (2 if name == "multinode.yaml" else 1)
    launched = []
    for command in commands:
        args, env = launch_environment(command, monkeypatch)
        assert args.config_file == f"configs/accelerate/{name}"
        assert args.module and args.training_script == "rewardcollapse.cli"
        assert args.training_script_args[0] == "train"
        job, config = command_parser(["train"]).parse_args_into_dataclasses(args=args.training_script_args[1:])
        assert job.data == "train.jsonl" and config.output_dir.startswith("runs/")
        assert env["ACCELERATE_MIXED_PRECISION"] == "no"
        launched.append((args.num_machines, args.machine_rank, args.num_processes, args.main_process_ip))
    if name == "multinode.yaml":  # the same command on each machine, but for its rank
        assert launched == [(2, 0, 16, "MAIN_IP"), (2, 1, 16, "MAIN_IP")]


@pytest.mark.slow
def test_python_m_runs_the_cli():
    """``accelerate launch -m rewardcollapse.cli`` runs ``python -m rewardcollapse.cli``: it must reach main()."""
    done = subprocess.run(
        [sys.executable, "-m", "rewardcollapse.cli", "train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: rewardcollapse train")


def test_fsdp_file_shards_each_layer_of_the_default_backbone(monkeypatch, tiny_model):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from torch.distributed.fsdp import StateDictType
    from transformers.models.bert.modeling_bert import BertLayer

    (command,) = header_commands(CONFIG_DIR / "fsdp.yaml")
    args, env = launch_environment(command, monkeypatch)
    assert args.use_fsdp and env["ACCELERATE_USE_FSDP"] == "true"
    use_environment(env, monkeypatch)
    plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables, as the Trainer's accelerator does
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True  # full shard
    assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT  # save_model writes a loadable model
    model = tiny_model()
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)  # raises if the named layer class is not in the model
    assert [type(m) for m in model.modules() if policy(m)] == [BertLayer, BertLayer]


@pytest.mark.parametrize(("name", "stage"), [("deepspeed_zero2.yaml", 2), ("deepspeed_zero3.yaml", 3)])
def test_deepspeed_files(name, stage, monkeypatch):
    """The DeepSpeed config accelerate builds (no deepspeed install needed to build it, only to train)."""
    from accelerate.utils import DeepSpeedPlugin

    (command,) = header_commands(CONFIG_DIR / name)
    args, env = launch_environment(command, monkeypatch)
    assert args.use_deepspeed
    use_environment(env, monkeypatch)
    plugin = DeepSpeedPlugin()
    config = plugin.deepspeed_config
    assert config["zero_optimization"]["stage"] == stage
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "none"
    assert config["zero_optimization"]["offload_param"]["device"] == "none"
    # "auto": the Trainer fills them from --max_grad_norm, --gradient_accumulation_steps and the batch size.
    assert config["gradient_clipping"] == config["gradient_accumulation_steps"] == "auto"
    assert config["train_micro_batch_size_per_gpu"] == "auto"
    assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is (stage == 3)
    assert plugin.zero3_init_flag is (stage == 3)


@pytest.mark.slow
def test_two_process_fsdp_matches_one_process(tmp_path, tiny_dir, free_port):
    """One SGD step under FSDP (2 processes, half the batch each) equals one process on the whole batch.

    Launched exactly as users launch it: ``accelerate launch --config_file configs/accelerate/fsdp.yaml``. With two
    GPUs the processes use NCCL; otherwise both run on the CPU with gloo, where the worker reports what accelerate
    set up instead of FSDP, and the test is skipped with that report.
    """
    import accelerate
    import torch
    from safetensors.torch import load_file

    data = write_rankings(tmp_path / "data.jsonl", 8)
    worker = Path(__file__).with_name("fsdp_worker.py")
    # Two processes cannot share one GPU under NCCL: with fewer than two GPUs both run on the CPU.
    devices = "0,1" if torch.cuda.device_count() >= 2 else ""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": devices}
    common = [str(worker), str(tiny_dir), str(data)]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG_DIR / "fsdp.yaml")]
    launcher += ["--num_processes", "2", "--main_process_port", str(free_port)]
    double = subprocess.run(
        [*launcher, *common, str(tmp_path / "two"), "2"], env=env, capture_output=True, text=True, timeout=300
    )
    assert double.returncode == 0, double.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    if not two["sharded"] and two["device"].startswith("cpu"):
        pytest.skip(
            f"FSDP does not run on CPU through RankingRewardTrainer (torch {torch.__version__}, accelerate "
            f"{accelerate.__version__}): {two['reason']}"
        )
    assert two["sharded"] and two["distributed_type"] == "FSDP" and two["fsdp_version"] == 2, two
    single = subprocess.run(
        [sys.executable, *common, str(tmp_path / "one"), "4"],
        env={**env, "CUDA_VISIBLE_DEVICES": devices[:1]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "result.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert abs(one["loss"] - two["loss"]) < 1e-5
    # One SGD step with learning rate 1 moves each weight by minus its gradient; FSDP saves the gathered weights.
    a = load_file(tmp_path / "one" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model.safetensors")
    assert sorted(a) == sorted(b)
    assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-5
