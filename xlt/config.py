"""Validation of a run's config before anything is built.

Hydra composes ``conf/train.yaml``; :func:`validate` merges the result into the dataclasses of
:mod:`xlt.schema` (unknown keys and wrong types fail), checks the task names against the task
registry, the weight source against :data:`xlt.modeling.encoder.WEIGHT_SOURCES` and the Trainer
arguments against ``pytorch_lightning.Trainer``, and returns a read-only config.

Validation sits above what it checks: it imports the task registry, the family and weight-source
tables (xlt.modeling) and the planner's memory check (xlt.plan); none of those, nor any module below
the run's orchestration, imports it. What every layer shares (the schema's dataclasses,
:class:`~xlt.schema.ConfigError`, ``CONF_DIR``, the batch arithmetic) is :mod:`xlt.schema`.
"""

from __future__ import annotations

import inspect
import logging

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from xlt.checks import check_dev_analysis, check_hub_revisions, check_keys, check_ranges, positive
from xlt.plan.host import estimate_host
from xlt.plan.jobs import check_gpu_memory, fill_host_memory, resolve_per_device_batch
from xlt.public_config import remember_env_keys
from xlt.schema import (
    NO_INTERMEDIATE,
    ConfigError,
    SamplingConfig,
    TrainConfig,
    batch_plan,
    group_choices,
)
from xlt.tasks.lengths import seq_length
from xlt.tasks.loading import configured_data_dir_error
from xlt.tasks.registry import UnknownTaskError, flatten_mixture, get_mixture, get_task
from xlt.tasks.spec import TaskSpec


def register_configs() -> None:
    """Config options that are not YAML files: ``intermediate=none``, the no-intermediate baseline
    as a named choice, so that one sweep can list it beside the real tasks (Hydra cannot override a
    config group to null from the command line). :func:`validate` turns it into ``intermediate:
    null``; settings merged on top of it (a sweep's example caps) are ignored."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="intermediate", name=NO_INTERMEDIATE, node={"name": NO_INTERMEDIATE})


register_configs()

# model.source: a key of xlt.modeling.encoder.WEIGHT_SOURCES, checked in validate().
CHOICES = {
    "model.family": ("xlmr", "qwen2.5", "e5"),
    "model.pooling": ("cls", "mean", "last"),
    "model.dtype": ("float32", "bfloat16", "float16"),
    "scale.peft": ("none", "lora"),
    "scale.precision": ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "32", "16", "bf16"),
    "logger.kind": ("wandb", "csv", "none"),
    "logger.mode": ("auto", "online", "offline"),
    "data.source": ("auto", "local", "hub"),
}
# Trainer arguments that the run derives from `scale`, `optim` and the stage; setting them under
# `trainer` is an error. (`trainer.max_epochs`, when set, overrides every stage's `epochs`: debug configs use it.)
DERIVED_TRAINER_ARGS = (
    "precision",
    "strategy",
    "devices",
    "num_nodes",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "logger",
    "callbacks",
    "default_root_dir",
)


def _host_memory_gb(*, _root_: DictConfig) -> int | None:
    """``${xlt_host_memory_gb:}`` (conf/scale/default.yaml): xlt.plan's per-node host RAM for the job
    the root config describes, in whole GB; None where it cannot be estimated (no architecture block,
    no target yet)."""
    try:
        # A job on GPUs unless it says cpu: SLURM jobs resolve this on a login node without CUDA.
        gpu = str(_root_.trainer.get("accelerator", "auto")) != "cpu"
        # An int: the SLURM launcher's mem_gb (submitit's SlurmQueueConf) is typed int, and a float
        # such as 743.0 fails the launcher's composition.
        # The composed config, not yet validated: stage lengths left null take the task spec's, as
        # validation does (a CPU job's estimate needs them), on a copy.
        job = OmegaConf.create(OmegaConf.to_container(_root_, resolve=False))
        assert isinstance(job, DictConfig)
        _fill_from_specs(job)
        return int(estimate_host(job, gpu=gpu).request_gb)
    except Exception:  # an incomplete config (composition, a test's partial one): no figure, no --mem
        return None


if not OmegaConf.has_resolver("xlt_host_memory_gb"):
    OmegaConf.register_new_resolver("xlt_host_memory_gb", _host_memory_gb)


def validate(cfg: DictConfig) -> DictConfig:
    """Check a composed config against the schema and the registries; return it typed and read-only."""
    merged = _merge_schema(cfg)
    _check_model_choices(merged)
    target = _check_task_names(merged)
    _fill_from_specs(merged)  # train_task, max_seq_length left null: the task spec's values
    check_hub_revisions(merged.data.hub_revisions)
    _check_target(merged.target, target, merged.data.source)
    _check_trainer_args(merged.trainer)
    check_keys(merged)  # seed, architecture, strategy, LoRA, trainer values, train task's head kind
    _check_scale_and_model(merged)
    _resolve_auto_batch(merged)
    check_ranges(merged)
    _check_data(merged)
    world = merged.scale.devices * merged.scale.num_nodes
    for stage_name in ("intermediate", "target"):
        stage = merged.get(stage_name)
        if stage is not None:
            try:
                batch_plan(stage.batch_size, merged.scale.per_device_batch_size, world)
            except ValueError as err:
                raise ConfigError(f"{stage_name}.batch_size: {err}") from None
    # A GPU run whose estimate exceeds scale.gpu_memory_gb stops here.
    check_gpu_memory(merged)
    fill_host_memory(merged)
    OmegaConf.set_readonly(merged, True)
    return merged


def _merge_schema(cfg: DictConfig) -> DictConfig:
    """The composed config merged into :class:`~xlt.schema.TrainConfig` and resolved: unknown keys,
    wrong types and missing mandatory values fail here; ``intermediate=none`` becomes null."""
    if cfg.get("target") is None:
        raise ConfigError(
            "no target task: add +target=NAME (with '+', since target is not in the defaults list); "
            f"choices: {', '.join(group_choices('target'))}"
        )
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg)
        remember_env_keys(merged)  # type: ignore[arg-type]  # written copies keep ${oc.env:...} unresolved (xlt/public_config.py)
        OmegaConf.resolve(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        msg = str(err).splitlines()[0]
        raise ConfigError(f"config option {key!r}: {msg}" if key else f"config: {msg}") from None
    assert isinstance(merged, DictConfig)
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        more = f", as are {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ConfigError(f"{missing[0]}: no value (a mandatory key{more}; set it, e.g. {missing[0]}=...)")
    if merged.intermediate is not None and merged.intermediate.name == NO_INTERMEDIATE:
        merged.intermediate = None
    return merged


def _check_model_choices(cfg: DictConfig) -> None:
    """The weight source (a key of the one table of them), the family table's fills, the closed choices."""
    from xlt.modeling.encoder import WEIGHT_SOURCES  # lazy: torch and transformers (--help speed)

    if cfg.model.source not in WEIGHT_SOURCES:
        raise ConfigError(f"model.source={cfg.model.source!r}: expected one of {', '.join(WEIGHT_SOURCES)}")
    _fill_from_family(cfg)
    for dotted, valid in CHOICES.items():
        value = OmegaConf.select(cfg, dotted)
        if value not in valid:
            raise ConfigError(f"{dotted}={value!r}: expected one of {', '.join(valid)}")


def _check_task_names(cfg: DictConfig) -> TaskSpec:
    """Every task the config names is registered for its role; returns the target's spec."""
    try:
        if cfg.intermediate is not None:
            _check_intermediate(cfg.intermediate)
        _check_not_a_mixture("target", cfg.target)
        target = get_task(cfg.target.name, role="target")
        if cfg.target.train_task:
            get_task(cfg.target.train_task)
        for probe in cfg.probe.tasks:
            spec = get_task(probe, role="probe")
            for lang in cfg.probe.languages or []:
                if lang not in spec.languages:
                    raise ConfigError(f"probe.languages: {lang!r} is not a language of {spec.name}")
    except UnknownTaskError as err:
        raise ConfigError(str(err)) from None
    return target


def _check_target(stage: DictConfig, target: TaskSpec, source: str) -> None:
    """The target stage's settings against its spec: data source, training task, selection set,
    example cap of a mined corpus, languages."""
    if target.hub_unusable and source == "hub":
        raise ConfigError(f"data.source=hub: {target.name}: {target.hub_unusable}")
    if target.trainable and not stage.train_task:
        raise ConfigError(
            f"target.train_task: {target.name} needs an English training task (default {target.train_task})"
        )
    select_on = stage.get("select_on", "target")
    if select_on not in ("target", "train_task"):
        raise ConfigError(
            f"target.select_on={select_on!r}: expected target (the target's English dev) or "
            "train_task (its training task's validation set, as jiant's XTREME scripts)"
        )
    if select_on == "train_task" and not stage.train_task:
        raise ConfigError(f"target.select_on=train_task: {target.name} has no training task to select on")
    check_dev_analysis(stage, target)
    if target.retrieval == "mining" and stage.max_eval_examples is not None:
        raise ConfigError(
            f"target.max_eval_examples={stage.max_eval_examples}: {target.name} mines each corpus "
            "whole (a cut corpus changes every margin score); leave it null"
        )
    for lang in stage.languages or []:
        if lang not in target.languages:
            raise ConfigError(
                f"target.languages: {lang!r} is not a language of {target.name} ({', '.join(target.languages)})"
            )


def _resolve_auto_batch(cfg: DictConfig) -> None:
    """``scale.per_device_batch_size: auto`` becomes the number xlt.plan picks (the largest that fits
    ``scale.gpu_memory_gb``), so the run config, the config lock and the result rows record it."""
    value = cfg.scale.per_device_batch_size
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        if value != "auto":
            raise ConfigError(f"scale.per_device_batch_size={value!r}: expected a positive integer or auto")
        for name in ("intermediate", "target"):  # a stage's batch must split over the devices first
            stage = cfg.get(name)
            if stage is not None:
                positive(stage.batch_size, f"{name}.batch_size", integer=True)
        cfg.scale.per_device_batch_size, why = resolve_per_device_batch(cfg)
        logging.getLogger(__name__).info("scale.per_device_batch_size=auto -> %s", why)
    elif isinstance(value, str):
        cfg.scale.per_device_batch_size = int(value)


def _fill_from_family(cfg: DictConfig) -> None:
    """Model settings the family table (:mod:`xlt.modeling.families`, ``model.arch``) decides: the
    pooling default, the HF ``model_type`` a checkpoint must have, the LoRA target modules (null: the
    family's; names the family's layers do not have are refused)."""
    from xlt.modeling.families import family_of

    try:
        family = family_of(cfg.model)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    model = cfg.model
    model.arch = family.name
    if model.pooling is None:
        model.pooling = family.pooling
    if family.decoder and model.pooling == "cls":
        raise ConfigError(
            f"model.pooling=cls: model.arch={family.name} is a causal decoder, whose first "
            "token has read nothing after it; use last (or mean)"
        )
    if model.expected_model_type is None:
        model.expected_model_type = family.model_type
    elif model.expected_model_type != family.model_type:
        raise ConfigError(
            f"model.expected_model_type={model.expected_model_type!r}: model.arch={family.name} "
            f"is {family.model_type!r}; leave it null"
        )
    lora = cfg.scale.lora
    if lora.target_modules is None:
        lora.target_modules = list(family.lora_target_modules)
    known = list(dict.fromkeys(name for name, _, _ in family.projections))
    for name in lora.target_modules:
        if name not in known:
            raise ConfigError(
                f"scale.lora.target_modules: {name!r} is no projection of model.arch={family.name} "
                f"(expected some of {', '.join(known)})"
            )


def _fill_from_specs(cfg: DictConfig) -> None:
    """Stage settings left null take the task spec's value (``TaskSpec.train_task``,
    ``TaskSpec.max_seq_length``): the YAML files override a spec's fact, never restate it, and the
    validated config (hence the config lock, reuse key and result rows) records the value used."""
    for name in ("intermediate", "target"):
        stage = cfg.get(name)
        if stage is None or get_mixture(stage.name) is not None:
            continue  # a mixture has no spec length: its stage file sets max_seq_length
        stage.max_seq_length = seq_length(stage)
        if name == "target" and stage.train_task is None:
            stage.train_task = get_task(stage.name).train_task


def _check_intermediate(stage: DictConfig) -> None:
    mixture = get_mixture(stage.name)
    if mixture is None:
        get_task(stage.name, role="intermediate")
        _check_not_a_mixture("intermediate", stage)
        return
    for key in ("train_split", "dev_split"):
        if stage[key] is not None:
            raise ConfigError(
                f"intermediate.{key}={stage[key]!r}: {stage.name} is a mixture; set "
                f"intermediate.members.<task>.{key} instead"
            )
    tasks = flatten_mixture(mixture).tasks
    for key, names in (
        ("members", list(stage.members)),
        ("only", list(stage.only or [])),
        ("skip_members", list(stage.skip_members)),
    ):
        for name in names:
            if name not in tasks:
                raise ConfigError(
                    f"intermediate.{key}: {name!r} is not a member of {stage.name} ({', '.join(tasks)})"
                )
    sampling = stage.sampling
    if sampling.cap is not None and sampling.cap < 1:
        raise ConfigError(f"intermediate.sampling.cap={sampling.cap}: expected >= 1 or null")
    if not sampling.temperature > 0:
        raise ConfigError(f"intermediate.sampling.temperature={sampling.temperature}: expected > 0")
    if sampling.steps_per_epoch is not None and sampling.steps_per_epoch < 1:
        raise ConfigError(
            f"intermediate.sampling.steps_per_epoch={sampling.steps_per_epoch}: expected >= 1 or null"
        )


def _check_not_a_mixture(stage_name: str, stage: DictConfig) -> None:
    """members/only/sampling mean something only for a mixture: setting them elsewhere is a mistake."""
    if (
        stage.members
        or stage.only is not None
        or stage.skip_members
        or OmegaConf.to_object(stage.sampling) != SamplingConfig()
    ):
        key = (
            "members"
            if stage.members
            else "only"
            if stage.only is not None
            else "skip_members"
            if stage.skip_members
            else "sampling"
        )
        raise ConfigError(f"{stage_name}.{key}: only for mixture stages ({stage.name} is a single task)")


def _check_scale_and_model(cfg: DictConfig) -> None:
    strategy = cfg.scale.strategy
    if not isinstance(strategy, str) and not (isinstance(strategy, DictConfig) and "_target_" in strategy):
        raise ConfigError(
            f"scale.strategy: expected a strategy name or a dict with _target_, got {strategy!r}"
        )
    if cfg.scale.checkpoint_every_n_steps is not None and cfg.scale.checkpoint_every_n_steps < 1:
        raise ConfigError(
            f"scale.checkpoint_every_n_steps={cfg.scale.checkpoint_every_n_steps}: expected >= 1 or null"
        )
    model = cfg.model
    if model.keep_layers is not None and model.keep_layers != model.num_layers:
        raise ConfigError(
            f"model.keep_layers={model.keep_layers}: model.num_layers must record the kept count"
        )
    if not 0 <= cfg.retrieval.layer <= model.num_layers and cfg.retrieval.layer != -1:
        raise ConfigError(f"retrieval.layer={cfg.retrieval.layer}: the model has {model.num_layers} layers")


def _check_data(cfg: DictConfig) -> None:
    """A data directory the user named (``data.dir``, ``$XLT_DATA_DIR``) must exist: no silent hub
    fallback. (Which files it holds is checked by ``xlt.tasks.loading.check_local_files``.)"""
    problem = configured_data_dir_error(cfg.data.source, cfg.data.dir)
    if problem:
        raise ConfigError(problem)


def _check_trainer_args(trainer: DictConfig) -> None:
    import pytorch_lightning as pl

    accepted = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    for key in map(str, trainer):
        if key in DERIVED_TRAINER_ARGS:
            raise ConfigError(
                f"trainer.{key}: set by the run from scale/* and the task config; change it there"
            )
        if key not in accepted:
            raise ConfigError(f"trainer.{key}: not an argument of pytorch_lightning.Trainer")
