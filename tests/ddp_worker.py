"""One SGD step of RankingRewardTrainer, for the data-parallel test: run alone, or under torchrun with gloo.

Usage: python ddp_worker.py MODEL_DIR DATA_JSONL OUTPUT_DIR PER_DEVICE_BATCH
Writes OUTPUT_DIR/model.safetensors and OUTPUT_DIR/result.json (the global batch's loss, world size).
"""

import json
import os
import sys


def one_step_config(output: str, batch_size: int, *, use_cpu: bool = False):
    """One exact SGD step (learning rate 1, float32, data in order): the setting both parallel tests compare.

    Shared with ``fsdp_worker.py``. Processes talk over gloo when they have no GPU; ``use_cpu`` keeps a run in the
    test's own process on the CPU, as the launched processes are.
    """
    import torch

    from rewardcollapse.training import RankingRewardConfig

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return RankingRewardConfig(
        output_dir=output,
        per_device_train_batch_size=batch_size,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        train_sampling_strategy="sequential",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        max_length=64,
        utility="prompt-aware",
        precision="fp32",  # the comparison is exact to 1e-5: no autocast
        dataloader_pin_memory=False,
        ddp_backend="gloo" if distributed and not torch.cuda.is_available() else None,
        use_cpu=use_cpu,
    )


def run(model_dir: str, data: str, output: str, batch_size: int, *, use_cpu: bool = False) -> None:
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rewardcollapse.data import load_rankings
    from rewardcollapse.training import RankingRewardTrainer

    datasets.disable_progress_bars()

    class Recording(RankingRewardTrainer):
        """Keeps this process's first training loss (the Trainer logs the main process's only)."""

        first_loss = None

        def compute_loss(self, model, inputs, **kwargs):
            loss = super().compute_loss(model, inputs, **kwargs)
            if self.first_loss is None:
                self.first_loss = loss.detach().clone()
            return loss

    args = one_step_config(output, batch_size, use_cpu=use_cpu)
    trainer = Recording(
        model=AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1),
        args=args,
        train_dataset=load_rankings(data),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    trainer.train()
    trainer.save_model(output)
    # The global batch's loss is the mean of the processes' losses (equal numbers of prompts per process).
    loss = trainer.first_loss
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(loss)
        loss /= torch.distributed.get_world_size()
    if args.process_index == 0:
        result = {"loss": float(loss), "world_size": args.world_size, "shared_prompt": trainer.shared is not None}
        with open(f"{output}/result.json", "w") as handle:
            json.dump(result, handle)


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
