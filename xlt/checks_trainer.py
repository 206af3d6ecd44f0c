"""The values of the pass-through ``trainer.*`` keys (types and ranges Lightning would reject with a
traceback, an accelerator this machine does not have, ``val_check_interval`` that a stage's
``val_check_every`` would replace), for :func:`xlt.checks.check_keys`; and the number tests the
checks share.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

from xlt.schema import ConfigError


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def _int_at_least(low: int) -> Any:
    return lambda v: (is_int(v) and v >= low, f"an integer >= {low}")


def _fraction_or_count(closed: bool = True) -> Any:
    def check(v: Any) -> tuple[bool, str]:
        if is_int(v):
            return v >= 0, "a count >= 0 or a fraction in [0, 1]"
        return is_number(v) and 0 <= v <= 1 and (closed or v < 1), "a count >= 0 or a fraction in [0, 1]"

    return check


def _bool(v: Any) -> tuple[bool, str]:
    return isinstance(v, bool), "true or false"


def _val_check_interval(v: Any) -> tuple[bool, str]:
    if is_int(v):
        return v >= 1, "a batch count >= 1 or an epoch fraction in (0, 1]"
    return is_number(v) and 0 < v <= 1, "a batch count >= 1 or an epoch fraction in (0, 1]"


# Pass-through Trainer arguments with the values Lightning accepts (others are checked by name only).
TRAINER_VALUES = {
    "log_every_n_steps": _int_at_least(1),
    "num_sanity_val_steps": _int_at_least(-1),
    "max_epochs": _int_at_least(-1),
    "min_epochs": _int_at_least(0),
    "max_steps": _int_at_least(-1),
    "min_steps": _int_at_least(0),
    "check_val_every_n_epoch": _int_at_least(1),
    "reload_dataloaders_every_n_epochs": _int_at_least(0),
    "val_check_interval": _val_check_interval,
    "limit_train_batches": _fraction_or_count(),
    "limit_val_batches": _fraction_or_count(),
    "limit_test_batches": _fraction_or_count(),
    "limit_predict_batches": _fraction_or_count(),
    "overfit_batches": _fraction_or_count(closed=False),
    "fast_dev_run": lambda v: (
        isinstance(v, bool) or (is_int(v) and v >= 0),
        "true, false or a batch count >= 0",
    ),
    "enable_progress_bar": _bool,
    "enable_model_summary": _bool,
    "enable_checkpointing": _bool,
    "detect_anomaly": _bool,
    "barebones": _bool,
    "inference_mode": _bool,
    "use_distributed_sampler": _bool,
    "sync_batchnorm": _bool,
    "deterministic": lambda v: (isinstance(v, bool) or v == "warn", "true, false or warn"),
    "benchmark": lambda v: (v is None or isinstance(v, bool), "true, false or null"),
}


def check_trainer_values(cfg: DictConfig) -> None:
    trainer = cfg.trainer
    for key in map(str, trainer):
        value = trainer[key]
        check = TRAINER_VALUES.get(key)
        if check is not None:
            ok, expected = check(value)
            if not ok:
                raise ConfigError(f"trainer.{key}={value!r}: expected {expected}")
    accelerator = trainer.get("accelerator", "auto")
    if accelerator not in ACCELERATORS:
        raise ConfigError(f"trainer.accelerator={accelerator!r}: expected one of {', '.join(ACCELERATORS)}")
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={accelerator}: this machine has no usable CUDA GPU "
                "(use trainer.accelerator=cpu or auto)"
            )
    if accelerator == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise ConfigError("trainer.accelerator=mps: this machine has no MPS device")
    if accelerator == "tpu":
        raise ConfigError("trainer.accelerator=tpu: not supported by xlt (cpu, gpu)")
    interval = trainer.get("val_check_interval", 1.0)
    if interval not in (1, 1.0) and not trainer.get("fast_dev_run"):
        for name in ("intermediate", "target"):
            stage = cfg.get(name)
            if stage is not None and stage.get("val_check_every"):
                raise ConfigError(
                    f"trainer.val_check_interval={interval}: {name}.val_check_every={stage.val_check_every} "
                    f"sets when {name} validates and would replace it; set {name}.val_check_every (optimizer "
                    f"steps) instead, or {name}.val_check_every=null to use trainer.val_check_interval"
                )
