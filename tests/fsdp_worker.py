"""One SGD step of RankingRewardTrainer under FSDP, for the sharded-training test: run alone, or under a launcher.

Usage: python fsdp_worker.py MODEL_DIR DATA_JSONL OUTPUT_DIR PER_DEVICE_BATCH

Run alone, it trains in one process (the reference). Under ``accelerate launch --config_file
configs/accelerate/fsdp.yaml --num_processes 2 fsdp_worker.py ...`` the launcher's environment (ACCELERATE_USE_FSDP,
FSDP_VERSION, FSDP_AUTO_WRAP_POLICY, FSDP_STATE_DICT_TYPE, ...) asks the Trainer's accelerator for FSDP, exactly as
for ``rewardcollapse train``. Writes OUTPUT_DIR/result.json (the global batch's loss, the world size, accelerate's
distributed type, the FSDP version, whether the model came out sharded) and OUTPUT_DIR/model.safetensors (the full
state dict, gathered on the main process).

When FSDP was asked for but accelerate set up something else (on CPU it sets up plain data parallelism), the worker
writes result.json with ``"sharded": false`` and the reason, and stops before training with exit status 0: the
test reads the reason instead of comparing a DDP run under an FSDP name.
"""

import json
import os
import sys


def _fsdp_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")


def _write(output: str, result: dict) -> None:
    with open(f"{output}/result.json", "w") as handle:
        json.dump(result, handle)


def run(model_dir: str, data: str, output: str, batch_size: int) -> None:
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ddp_worker import one_step_config  # run as a script: its folder is on sys.path
    from rewardcollapse.data import load_rankings
    from rewardcollapse.training import RankingRewardTrainer

    datasets.disable_progress_bars()

    class Recording(RankingRewardTrainer):
        """Keeps this process's first training loss and the model class the step ran (the wrapped one under FSDP)."""

        first_loss = None
        stepped_model = None

        def compute_loss(self, model, inputs, **kwargs):
            loss = super().compute_loss(model, inputs, **kwargs)
            if self.first_loss is None:
                self.first_loss = loss.detach().clone()
                self.stepped_model = model
            return loss

    args = one_step_config(output, batch_size)
    from rewardcollapse.core.errors import InputValueError

    try:
        trainer = Recording(
            model=AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1),
            args=args,
            train_dataset=load_rankings(data),
            processing_class=AutoTokenizer.from_pretrained(model_dir),
        )
    except InputValueError as error:
        # accelerate 1.15's AcceleratorState attaches the FSDP plugin only for accelerator-backed distributed types
        # (MULTI_GPU, MULTI_XPU, ...); on a CPU it would set up plain DDP, which the trainer refuses by name.
        if "FSDP was asked for" not in str(error):
            raise
        if args.process_index == 0:
            reason = f"accelerate {__import__('accelerate').__version__}: {error}"
            _write(
                output, {"world_size": args.world_size, "device": str(args.device), "sharded": False, "reason": reason}
            )
        return
    state = trainer.accelerator.state
    result = {
        "world_size": args.world_size,
        "device": str(args.device),
        "distributed_type": state.distributed_type.value,
        "fsdp_requested": _fsdp_requested(),
        "fsdp_version": getattr(getattr(state, "fsdp_plugin", None), "fsdp_version", None),
    }
    trainer.train()
    trainer.save_model(output)
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    result["sharded"] = isinstance(trainer.stepped_model, (FSDPModule, FullyShardedDataParallel))
    result["model_class"] = type(trainer.stepped_model).__name__
    # The global batch's loss is the mean of the processes' losses (equal numbers of prompts per process).
    loss = trainer.first_loss
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(loss)
        loss /= torch.distributed.get_world_size()
        torch.distributed.barrier()  # every process is done with collectives before any of them exits
    if args.process_index == 0:
        _write(output, {**result, "loss": float(loss)})


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
