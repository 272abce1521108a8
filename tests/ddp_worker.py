"""SGD steps of RankingRewardTrainer, for the data-parallel tests: run alone, or under torchrun with gloo.

Usage: python ddp_worker.py MODEL_DIR DATA_JSONL OUTPUT_DIR PER_DEVICE_BATCH [CASES_JSON]

Writes OUTPUT_DIR/model.safetensors and OUTPUT_DIR/result.json: the logged loss of each step and the final
``train_loss`` (the Trainer's, which must be the global batch's), the world size. CASES_JSON, a JSON object
``{name: {config field: value}}``, trains once per case (in one launch, so the processes start once) into
OUTPUT_DIR/name, each case's fields replacing those of :func:`one_step_config`.
"""

import json
import os
import sys


def one_step_config(output: str, batch_size: int, *, use_cpu: bool = False, **overrides):
    """One exact SGD step (learning rate 1, float32, data in order): the setting both parallel tests compare.

    Shared with ``fsdp_worker.py``. Processes talk over gloo when they have no GPU; ``use_cpu`` keeps a run in the
    test's own process on the CPU, as the launched processes are. ``overrides`` replace any field.
    """
    import torch

    from rewardcollapse.training import RankingRewardConfig

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    settings = dict(
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
    return RankingRewardConfig(**{**settings, **overrides})


def run(model_dir: str, data: str, output: str, batch_size: int, *, use_cpu: bool = False, **overrides) -> None:
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rewardcollapse.data import load_rankings
    from rewardcollapse.training import RankingRewardTrainer

    datasets.disable_progress_bars()
    trial_rounds = overrides.pop("trial_max_rounds", None)  # shared_prompt auto's trial, bounded for the test
    args = one_step_config(output, batch_size, use_cpu=use_cpu, **overrides)
    trainer = RankingRewardTrainer(
        model=AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1),
        args=args,
        train_dataset=load_rankings(data),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    if trial_rounds is not None:
        trainer.layout_trial.max_rounds = trial_rounds
    outcome = trainer.train()
    trainer.save_model(output)
    # The logged loss is the Trainer's mean over processes of what each returned: the global batch's loss.
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    trial = trainer.layout_trial
    if trial is not None and trial.chosen is not None:  # shared_prompt auto's choice, and whether every process made it
        choices = [trial.chosen]
        if args.world_size > 1:
            import torch.distributed

            choices = [None] * args.world_size
            torch.distributed.all_gather_object(choices, trial.chosen)
        trial = {**trial.record(), "agreed": len(set(choices)) == 1}
    else:
        trial = None
    if args.process_index == 0:
        result = {
            "loss": losses[0] if losses else None,
            "losses": losses,
            "train_loss": outcome.training_loss,
            "world_size": args.world_size,
            "shared_prompt": trainer.shared is not None,
            "trial": trial,
        }
        with open(f"{output}/result.json", "w") as handle:
            json.dump(result, handle)


if __name__ == "__main__":
    model_dir, data, output, batch_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if len(sys.argv) > 5:
        for name, overrides in json.loads(sys.argv[5]).items():
            run(model_dir, data, f"{output}/{name}", batch_size, **overrides)
    else:
        run(model_dir, data, output, batch_size)
