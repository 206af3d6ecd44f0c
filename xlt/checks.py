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

from xlt.checks_trainer import check_trainer_values, is_int, is_number
from xlt.schema import MOVED_TARGETS, ConfigError
from xlt.tasks.lengths import seq_length
from xlt.tasks.registry import all_tasks, flatten_mixture, get_mixture, get_task
from xlt.tasks.spec import HEAD_KINDS

SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range


def check_keys(cfg: DictConfig) -> None:
    check_seed(cfg)
    check_model_architecture(cfg.model)
    check_strategy(cfg.scale.strategy)
    check_lora(cfg.scale)
    if not (is_number(cfg.scale.gpu_memory_gb) and cfg.scale.gpu_memory_gb > 0):
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
    if not (is_int(seed) and 0 <= seed <= SEED_MAX):
        raise ConfigError(f"seed={seed!r}: expected an integer from 0 to {SEED_MAX}")


def check_model_architecture(model: DictConfig) -> None:
    """Sizes >= 1 and the head count dividing the hidden size (what the encoder's config asserts)."""
    for key in ("num_layers", "hidden_size"):
        if not (is_int(model[key]) and model[key] >= 1):
            raise ConfigError(f"model.{key}={model[key]!r}: expected an integer >= 1")
    for key in (
        "intermediate_size",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
        "vocab_size",
        "keep_layers",
    ):
        value = model.get(key)
        if value is not None and not (is_int(value) and value >= 1):
            raise ConfigError(f"model.{key}={value!r}: expected an integer >= 1 or null")
    if model.get("type_vocab_size") is not None and not (
        is_int(model.type_vocab_size) and model.type_vocab_size >= 0
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
        if sized and value is not None and not (is_int(value) and value >= 1):  # tie_word_embeddings: a flag
            raise ConfigError(f"model.random_init.{key}={value!r}: expected an integer >= 1")
        if str(key).endswith("_prob") and not (is_number(value) and 0 <= value < 1):
            raise ConfigError(f"model.random_init.{key}={value!r}: expected 0 <= p < 1")
    init_heads, init_hidden = init.get("num_attention_heads"), init.get("hidden_size", model.hidden_size)
    if is_int(init_heads) and is_int(init_hidden) and init_heads >= 1 and init_hidden % init_heads:
        raise ConfigError(
            f"model.random_init.num_attention_heads={init_heads}: does not divide the hidden size "
            f"{init_hidden}"
        )


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
        if target in MOVED_TARGETS:
            raise ConfigError(f"scale.strategy._target_={target!r}: moved; write {MOVED_TARGETS[target]}")
        module, _, name = str(target).rpartition(".")
        try:
            import importlib

            found = getattr(importlib.import_module(module), name) if module else None
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise ConfigError(
                f"scale.strategy._target_={target!r}: no such class (expected e.g. "
                "pytorch_lightning.strategies.FSDPStrategy)"
            )


def check_lora(scale: DictConfig) -> None:
    """Every ``scale.lora.*`` value (checked whatever scale.peft is: a profile may switch it on)."""
    lora = scale.lora
    if not (is_int(lora.r) and lora.r >= 1):
        raise ConfigError(f"scale.lora.r={lora.r!r}: expected an integer >= 1")
    if not (is_number(lora.alpha) and lora.alpha > 0):
        raise ConfigError(f"scale.lora.alpha={lora.alpha!r}: expected > 0")
    if not (is_number(lora.dropout) and 0 <= lora.dropout < 1):
        raise ConfigError(f"scale.lora.dropout={lora.dropout!r}: expected 0 <= dropout < 1")
    modules = lora.target_modules
    if not (
        isinstance(modules, ListConfig | list) and modules and all(isinstance(m, str) and m for m in modules)
    ):
        raise ConfigError(f"scale.lora.target_modules={modules!r}: expected a non-empty list of module names")
    if lora.lr is not None and not (is_number(lora.lr) and lora.lr > 0):
        raise ConfigError(f"scale.lora.lr={lora.lr!r}: expected > 0 or null")


def check_train_task(cfg: DictConfig) -> None:
    """The target's English training task has the target's head kind and labels (else the model
    would be built and loaded before the datamodule refused it)."""
    name = cfg.target.get("train_task")
    if not name or get_mixture(name) is not None:
        return
    target, train = get_task(cfg.target.name), get_task(name)
    if train.head != target.head:
        raise ConfigError(
            f"target.train_task={name}: a {train.head} task, but {target.name} is {target.head} "
            f"(its own training task: {target.train_task})"
        )
    if list(train.label_names or []) != list(target.label_names or []):
        raise ConfigError(
            f"target.train_task={name}: labels {list(train.label_names or [])}, but {target.name} has "
            f"{list(target.label_names or [])}"
        )


def check_hub_revisions(revisions: Any) -> None:
    """``data.hub_revisions`` keys must be repos some task reads (a typo would pin nothing, silently)."""
    repos = sorted({hub.path for spec in all_tasks().values() for hub in spec.hub.values()})
    unknown = [str(repo) for repo in (revisions or {}) if str(repo) not in repos]
    if unknown:
        raise ConfigError(
            f"data.hub_revisions: {', '.join(map(repr, unknown))} is not a hub repo any task reads "
            f"(valid: {', '.join(repos)})"
        )


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


def _needs(head: str) -> str:
    """What the shortest max_seq_length of a head kind must hold (``HEAD_KINDS``)."""
    kind = HEAD_KINDS.get(head)
    return kind.needs if kind else "its special tokens and some text"


def check_seq_length(option: str, length: int, specs: list[Any], model: DictConfig) -> None:
    """``length`` (the value of ``option``) between the tasks' shortest usable length and the model's positions."""
    positive(length, option, integer=True)
    for spec in specs:
        if length < spec.shortest_seq_length:
            raise ConfigError(
                f"{option}={length}: below {spec.name}'s minimum of {spec.shortest_seq_length} tokens "
                f"({_needs(spec.head)})"
            )
    if model.max_positions is not None and length > model.max_positions:
        raise ConfigError(
            f"{option}={length}: above the {model.max_positions} positions of model {model.name} (model.max_positions)"
        )


def check_ranges(cfg: DictConfig) -> None:
    """Numeric settings in range before any data or model is loaded: learning rates, batch sizes and
    epochs positive, example caps >= 1 or null, every max_seq_length between its tasks' minimum
    (``TaskSpec.shortest_seq_length``) and the model's positions (``model.max_positions``)."""
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
    check_seq_length("retrieval.max_seq_length", seq_length(cfg.retrieval), retrieval_specs, model)

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
                check_seq_length(option, seq_length(stage, task), [get_task(task)], model)
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
        raise ConfigError(
            f"{where}: {spec.name} has no dev split in other languages (its dev set is English "
            "only, or it has none); leave it false"
        )
    select_on = target.get("select_on", "target")
    if select_on != "target":
        raise ConfigError(
            f"{where} with target.select_on={select_on}: the English dev row is then the training "
            "task's validation set, not the target's; a gap on dev would compare different sets"
        )
    for lang in [] if option is True else list(option):
        if lang not in spec.languages:
            raise ConfigError(
                f"{where}: {lang!r} is not a language of {spec.name} ({', '.join(spec.languages)})"
            )
