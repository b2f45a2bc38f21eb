"""The one training loop (``loop``) and its config (``config``); see ``offline_bench.train.loop`` for the run files."""
from offline_bench.train.config import ResolvedConfig, TrainConfig, resolve_config, split_dataset_id
from offline_bench.train.loop import (
    TABLE_STATISTIC,
    Progress,
    TrainError,
    TrainOutcome,
    prepare,
    run_dir_for,
    train,
    train_run,
)

__all__ = [
    "TABLE_STATISTIC",
    "Progress",
    "ResolvedConfig",
    "TrainConfig",
    "TrainError",
    "TrainOutcome",
    "prepare",
    "resolve_config",
    "run_dir_for",
    "split_dataset_id",
    "train",
    "train_run",
]
