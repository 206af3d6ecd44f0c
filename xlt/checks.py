"""Checks of the keys :func:`xlt.config.validate` did not cover, run before anything is built: the
seed, the model's architecture keys, ``scale.strategy``, every ``scale.lora.*`` value, the values of
the pass-through ``trainer.*`` keys (types and ranges Lightning would reject with a traceback, an
accelerator this machine does not have, ``val_check_interval`` that a stage's ``val_check_every``
would replace), and a target trained on a task of another head kind or label set. Each problem is one
:class:`~xlt.schema.ConfigError` line naming the option and what was expected.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, ListConfig

from xlt.schema import ConfigError

SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_keys(cfg: DictConfig) -> None:
    check_seed(cfg)
    check_model_architecture(cfg.model)
    check_strategy(cfg.scale.strategy)
    check_lora(cfg.scale)
    if not (_is_number(cfg.scale.gpu_memory_gb) and cfg.scale.gpu_memory_gb > 0):
        raise ConfigError(f"scale.gpu_memory_gb={cfg.scale.gpu_memory_gb!r}: expected > 0 (GB)")
    check_trainer_values(cfg)
    check_train_task(cfg)
    check_cache_dir(cfg.data.cache_dir)


def check_cache_dir(cache_dir: str) -> None:
    """``data.cache_dir`` can be a directory: not a file, not under one."""
    from pathlib import Path

    path = Path(cache_dir).expanduser()
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            what = "is a file" if parent == path else f"is under {parent}, which is a file"
            raise ConfigError(f"data.cache_dir={cache_dir}: {what}; expected a directory")


def check_seed(cfg: DictConfig) -> None:
    seed = cfg.seed
    if not (_is_int(seed) and 0 <= seed <= SEED_MAX):
        raise ConfigError(f"seed={seed!r}: expected an integer from 0 to {SEED_MAX}")


def check_model_architecture(model: DictConfig) -> None:
    """Sizes >= 1 and the head count dividing the hidden size (what the encoder's config asserts)."""
    for key in ("num_layers", "hidden_size"):
        if not (_is_int(model[key]) and model[key] >= 1):
            raise ConfigError(f"model.{key}={model[key]!r}: expected an integer >= 1")
    for key in ("intermediate_size", "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                "vocab_size", "keep_layers"):  # fmt: skip
        value = model.get(key)
        if value is not None and not (_is_int(value) and value >= 1):
            raise ConfigError(f"model.{key}={value!r}: expected an integer >= 1 or null")
    if model.get("type_vocab_size") is not None and not (
        _is_int(model.type_vocab_size) and model.type_vocab_size >= 0
    ):
        raise ConfigError(
            f"model.type_vocab_size={model.type_vocab_size!r}: expected an integer >= 0 or null"
        )
    heads, kv = model.get("num_attention_heads"), model.get("num_key_value_heads")
    if heads and model.hidden_size % heads:
        raise ConfigError(
            f"model.hidden_size={model.hidden_size}: not divisible by model.num_attention_heads={heads}"
        )
    if heads and kv and heads % kv:
        raise ConfigError(
            f"model.num_key_value_heads={kv}: does not divide model.num_attention_heads={heads}"
        )
    init = model.get("random_init") or {}
    for key, value in init.items():
        sized = str(key).endswith(("_size", "_heads", "_layers", "_embeddings")) and not str(key).startswith(
            "tie_"
        )
        if sized and value is not None and not (_is_int(value) and value >= 1):  # tie_word_embeddings: a flag
            raise ConfigError(f"model.random_init.{key}={value!r}: expected an integer >= 1")
        if str(key).endswith("_prob") and not (_is_number(value) and 0 <= value < 1):
            raise ConfigError(f"model.random_init.{key}={value!r}: expected 0 <= p < 1")
    init_heads, init_hidden = init.get("num_attention_heads"), init.get("hidden_size", model.hidden_size)
    if _is_int(init_heads) and _is_int(init_hidden) and init_heads >= 1 and init_hidden % init_heads:
        raise ConfigError(f"model.random_init.num_attention_heads={init_heads}: does not divide the hidden size "
                          f"{init_hidden}")  # fmt: skip


def check_strategy(strategy: Any) -> None:
    """A Lightning strategy name, or a ``_target_`` dict whose class can be imported."""
    if isinstance(strategy, str):
        from pytorch_lightning.strategies import StrategyRegistry

        names = ["auto", *StrategyRegistry.available_strategies()]
        if strategy not in names:
            shown = ", ".join(n for n in names if "find_unused" not in n)
            raise ConfigError(
                f"scale.strategy={strategy!r}: expected one of {shown}, or a dict with _target_"
            )
        return
    if isinstance(strategy, DictConfig) and "_target_" in strategy:
        target = strategy._target_
        module, _, name = str(target).rpartition(".")
        try:
            import importlib

            found = getattr(importlib.import_module(module), name) if module else None
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise ConfigError(f"scale.strategy._target_={target!r}: no such class (expected e.g. "
                              "pytorch_lightning.strategies.FSDPStrategy)")  # fmt: skip


def check_lora(scale: DictConfig) -> None:
    """Every ``scale.lora.*`` value (checked whatever scale.peft is: a profile may switch it on)."""
    lora = scale.lora
    if not (_is_int(lora.r) and lora.r >= 1):
        raise ConfigError(f"scale.lora.r={lora.r!r}: expected an integer >= 1")
    if not (_is_number(lora.alpha) and lora.alpha > 0):
        raise ConfigError(f"scale.lora.alpha={lora.alpha!r}: expected > 0")
    if not (_is_number(lora.dropout) and 0 <= lora.dropout < 1):
        raise ConfigError(f"scale.lora.dropout={lora.dropout!r}: expected 0 <= dropout < 1")
    modules = lora.target_modules
    if not (
        isinstance(modules, ListConfig | list) and modules and all(isinstance(m, str) and m for m in modules)
    ):
        raise ConfigError(f"scale.lora.target_modules={modules!r}: expected a non-empty list of module names")
    if lora.lr is not None and not (_is_number(lora.lr) and lora.lr > 0):
        raise ConfigError(f"scale.lora.lr={lora.lr!r}: expected > 0 or null")


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def _int_at_least(low: int) -> Any:
    return lambda v: (_is_int(v) and v >= low, f"an integer >= {low}")


def _fraction_or_count(closed: bool = True) -> Any:
    def check(v: Any) -> tuple[bool, str]:
        if _is_int(v):
            return v >= 0, "a count >= 0 or a fraction in [0, 1]"
        return _is_number(v) and 0 <= v <= 1 and (closed or v < 1), "a count >= 0 or a fraction in [0, 1]"

    return check


def _bool(v: Any) -> tuple[bool, str]:
    return isinstance(v, bool), "true or false"


def _val_check_interval(v: Any) -> tuple[bool, str]:
    if _is_int(v):
        return v >= 1, "a batch count >= 1 or an epoch fraction in (0, 1]"
    return _is_number(v) and 0 < v <= 1, "a batch count >= 1 or an epoch fraction in (0, 1]"


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
        isinstance(v, bool) or (_is_int(v) and v >= 0),
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
            raise ConfigError(f"trainer.accelerator={accelerator}: this machine has no usable CUDA GPU "
                              "(use trainer.accelerator=cpu or auto)")  # fmt: skip
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


def check_train_task(cfg: DictConfig) -> None:
    """The target's English training task has the target's head kind and labels (else the model
    would be built and loaded before the datamodule refused it)."""
    from xlt.tasks.registry import get_mixture, get_task

    name = cfg.target.get("train_task")
    if not name or get_mixture(name) is not None:
        return
    target, train = get_task(cfg.target.name), get_task(name)
    if train.head != target.head:
        raise ConfigError(f"target.train_task={name}: a {train.head} task, but {target.name} is {target.head} "
                          f"(its own training task: {target.train_task})")  # fmt: skip
    if list(train.label_names or []) != list(target.label_names or []):
        raise ConfigError(f"target.train_task={name}: labels {list(train.label_names or [])}, but {target.name} has "
                          f"{list(target.label_names or [])}")  # fmt: skip


def check_hub_revisions(revisions: Any) -> None:
    """``data.hub_revisions`` keys must be repos some task reads (a typo would pin nothing, silently)."""
    from xlt.tasks.registry import all_tasks

    repos = sorted({hub.path for spec in all_tasks().values() for hub in spec.hub.values()})
    unknown = [str(repo) for repo in (revisions or {}) if str(repo) not in repos]
    if unknown:
        raise ConfigError(f"data.hub_revisions: {', '.join(map(repr, unknown))} is not a hub repo any task reads "
                          f"(valid: {', '.join(repos)})")  # fmt: skip


def positive(
    value: Any, option: str, what: str = "> 0", integer: bool = False, nullable: bool = False
) -> None:
    """A ConfigError naming ``option`` unless ``value`` is a finite number > 0 (an integer >= 1 when
    ``integer``; None allowed when ``nullable``)."""
    if value is None and nullable:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if integer:
        ok = ok and float(value) == int(value)
    if not ok:
        expected = ">= 1" if integer else what
        raise ConfigError(f"{option}={value!r}: expected {expected}{' or null' if nullable else ''}")


def check_seq_length(option: str, length: int, specs: list[Any], model: DictConfig) -> None:
    """``length`` (the value of ``option``) between the tasks' shortest usable length and the model's positions."""
    positive(length, option, integer=True)
    for spec in specs:
        if length < spec.shortest_seq_length:
            raise ConfigError(
                f"{option}={length}: below {spec.name}'s minimum of {spec.shortest_seq_length} tokens "
                f"({SEQ_LENGTH_NEEDS.get(spec.head, 'its special tokens and some text')})"
            )
    if model.max_positions is not None and length > model.max_positions:
        raise ConfigError(
            f"{option}={length}: above the {model.max_positions} positions of model {model.name} (model.max_positions)"
        )


# What the shortest max_seq_length of each head kind must hold (said when a length is too short).
SEQ_LENGTH_NEEDS = {
    "classification": "a pair's special tokens and a few tokens of each text",
    "multiple_choice": "a context-choice pair's special tokens and a few tokens of each",
    "tagging": "the special tokens and some words per window",
    "span_qa": "a question of up to 64 tokens, the special tokens and a context window of one doc stride, 128",
    "retrieval": "the special tokens and some words",
}


def check_ranges(cfg: DictConfig) -> None:
    """Numeric settings in range before any data or model is loaded: learning rates, batch sizes and
    epochs positive, example caps >= 1 or null, every max_seq_length between its tasks' minimum
    (``TaskSpec.shortest_seq_length``) and the model's positions (``model.max_positions``)."""
    from xlt.tasks.registry import flatten_mixture, get_mixture, get_task

    model = cfg.model
    positive(model.max_positions, "model.max_positions", integer=True, nullable=True)
    for key in ("per_device_batch_size", "devices", "num_nodes"):
        positive(cfg.scale[key], f"scale.{key}", integer=True)
    if cfg.data.num_workers < 0:
        raise ConfigError(f"data.num_workers={cfg.data.num_workers}: expected >= 0")
    optim = cfg.optim
    positive(optim.adam_epsilon, "optim.adam_epsilon")
    for key in ("weight_decay", "max_grad_norm"):
        if not (math.isfinite(optim[key]) and optim[key] >= 0):
            raise ConfigError(f"optim.{key}={optim[key]!r}: expected >= 0")
    if not 0 <= optim.warmup_ratio < 1:
        raise ConfigError(f"optim.warmup_ratio={optim.warmup_ratio!r}: expected 0 <= ratio < 1")
    positive(cfg.retrieval.batch_size, "retrieval.batch_size", integer=True)
    positive(cfg.probe.max_examples, "probe.max_examples", integer=True, nullable=True)
    # retrieval.* sizes the probes; a retrieval target embeds with its own stage settings (checked
    # with the other stages' max_seq_length).
    retrieval_specs = [get_task(name) for name in cfg.probe.tasks]
    target = get_task(cfg.target.name)
    check_seq_length("retrieval.max_seq_length", cfg.retrieval.max_seq_length, retrieval_specs, model)

    for stage_name in ("intermediate", "target"):
        stage = cfg.get(stage_name)
        if stage is None:
            continue
        for key in ("max_train_examples", "max_eval_examples", "val_check_every", "val_subset", "patience"):
            positive(stage[key], f"{stage_name}.{key}", integer=True, nullable=True)
        if stage_name == "target" and not target.trainable:
            # Retrieval: nothing trained (lr, epochs, batch_size unused); it embeds with these two.
            positive(stage.eval_batch_size, "target.eval_batch_size", integer=True)
            check_seq_length("target.max_seq_length", stage.max_seq_length, [target], model)
            continue
        for key in ("lr", "epochs"):
            positive(stage[key], f"{stage_name}.{key}")
        for key in ("batch_size", "eval_batch_size"):
            positive(stage[key], f"{stage_name}.{key}", integer=True)
        mixture = get_mixture(stage.name)
        if mixture is not None:
            members = flatten_mixture(mixture).tasks
            for task in members:
                member = stage.members.get(task)
                option = f"{stage_name}.max_seq_length"
                if member is not None:
                    for key in ("max_train_examples", "max_eval_examples"):
                        positive(
                            member[key], f"{stage_name}.members.{task}.{key}", integer=True, nullable=True
                        )
                    if member.max_seq_length is not None:
                        option = f"{stage_name}.members.{task}.max_seq_length"
                length = member.max_seq_length if member is not None and member.max_seq_length is not None else (
                    stage.max_seq_length)  # fmt: skip
                check_seq_length(option, length, [get_task(task)], model)
            continue
        spec = get_task(stage.name)
        specs = [spec] + ([get_task(stage.train_task)] if stage.get("train_task") else [])
        check_seq_length(f"{stage_name}.max_seq_length", stage.max_seq_length, specs, model)


def check_dev_analysis(target: DictConfig, spec: Any) -> None:
    """``target.eval_dev_languages`` (false, true or a list of the task's languages; only where its dev
    split exists in other languages, and only when selecting on the target's own dev) and
    ``target.eval_dev_heldout`` (a boolean): xlt/evaluation/analysis_dev.py."""
    heldout = target.get("eval_dev_heldout", True)
    if not isinstance(heldout, bool):
        raise ConfigError(f"target.eval_dev_heldout={heldout!r}: expected true or false")
    option = target.get("eval_dev_languages", False)
    where = "target.eval_dev_languages"
    if option is None or option is False:
        return
    if not (option is True or isinstance(option, (list, tuple, ListConfig))):
        raise ConfigError(f"{where}={option!r}: expected false, true or a list of {spec.name}'s languages")
    if not spec.dev_in_other_languages:
        raise ConfigError(f"{where}: {spec.name} has no dev split in other languages (its dev set is English "
                          "only, or it has none); leave it false")  # fmt: skip
    select_on = target.get("select_on", "target")
    if select_on != "target":
        raise ConfigError(f"{where} with target.select_on={select_on}: the English dev row is then the training "
                          "task's validation set, not the target's; a gap on dev would compare different sets")  # fmt: skip
    for lang in [] if option is True else list(option):
        if lang not in spec.languages:
            raise ConfigError(f"{where}: {lang!r} is not a language of {spec.name} ({', '.join(spec.languages)})")
