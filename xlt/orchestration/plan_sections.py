"""The run-wide sections of the plan: model, scale, optimiser, Trainer, logger, data, audit and the
config as written down, each decided once from the validated config by :func:`run_sections`.

After planning nothing reads the DictConfig: the session loads the encoder from :class:`ModelPlan`
and :class:`ScalePlan`, the Trainer is built from :class:`TrainerPlan` (its keyword arguments as a
frozen mapping), the heads' optimiser from :class:`OptimPlan`, the logger from :class:`LoggerPlan`,
the data from :class:`DataPlan`; the config lock, ``config.yaml``, the W&B run config and the
intermediate stage's reuse key read :class:`ConfigRecord` (plain data computed here). Nested mappings
are :class:`types.MappingProxyType` and lists tuples (:func:`xlt.utils.frozen.freeze`); ``thaw`` gives back the
plain dicts and lists a library call takes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from xlt.orchestration.reuse import ROOT_NAME
from xlt.public_config import public_container, public_yaml
from xlt.schema import to_container
from xlt.utils.frozen import freeze

HIDDEN = {"shown": False}  # field metadata: left out of the printed plan (+show=plan)


def plain(obj: Any) -> Any:
    """A plan (or any part of it) as plain data for printing: fields marked :data:`HIDDEN` left out."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.metadata.get("shown", True)
        }
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


@dataclass(frozen=True)
class ModelPlan:
    """The encoder to load: where its weights come from and what it is."""

    family: str
    arch: str | None
    source: str  # a key of xlt.modeling.encoder.WEIGHT_SOURCES
    hub_id: str | None
    revision: str | None  # as configured (a relaunch pins the commit its first launch read)
    dtype: str
    params: int | None  # the published parameter count
    # The whole model section (what xlt.modeling.encoder loads from and the random weights' cache key).
    section: Mapping[str, Any] = field(default_factory=dict, metadata=HIDDEN)


@dataclass(frozen=True)
class LoraPlan:
    """LoRA adapters on the encoder (``scale.peft=lora``); what xlt.modeling.encoder.add_lora reads."""

    r: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]
    lr: float | None


@dataclass(frozen=True)
class ScalePlan:
    """How the model is spread over the job's devices (the precision and the strategy's name are the
    plan's own ``precision`` and ``strategy``)."""

    name: str
    # a Trainer strategy name, or the ``_target_`` mapping xlt.training.trainer.build_strategy builds
    strategy: Any
    sharded: bool  # FSDP: weights handed over by xlt.orchestration.weights.ShardedWeights
    devices: int
    num_nodes: int
    activation_checkpointing: bool
    peft: str
    lora: LoraPlan


@dataclass(frozen=True)
class OptimPlan:
    """AdamW and its schedule (xlt.modeling.module.TransferModule.configure_optimizers), and clipping."""

    weight_decay: float
    warmup_ratio: float
    adam_epsilon: float
    max_grad_norm: float


@dataclass(frozen=True)
class TrainerPlan:
    """The Lightning Trainer's own settings (``trainer.*``), and what makes the run a debug run."""

    kwargs: Mapping[str, Any]  # the Trainer keyword arguments as configured (training.trainer.build_trainer)
    debug: str  # debug_mode: "" for a real run, e.g. "limit_test_batches=2"


@dataclass(frozen=True)
class LoggerPlan:
    """Where the run logs (xlt.training.loggers): none, a CSV file, or W&B."""

    kind: str
    mode: str  # W&B: online | offline | auto (online when an API key is configured, on the machine that runs)
    project: str
    entity: str | None
    group: str | None
    tags: tuple[str, ...]
    run_id: str | None
    log_model: bool


@dataclass(frozen=True)
class DataPlan:
    """Where the task data is read (``data.source`` and ``data.num_workers`` are the plan's own)."""

    dir: str | None
    cache_dir: str
    hub_mirror: str | None
    hub_revisions: Mapping[str, str] | None


@dataclass(frozen=True)
class ReusePlan:
    """Where the intermediate stage lives: shared under ``root`` by key, or in the run directory."""

    shared: bool
    root: str | None  # reuse.dir, or <sweep dir>/intermediate in a multirun; None: the run directory
    wait_timeout_min: float | None
    code: str | None  # reuse.code (None: the project's commit, xlt.orchestration.reuse.code_version)
    key_prefix: str  # <model>-<intermediate>-s<seed>; the digest is added once the weights are loaded
    # The probe and retrieval settings a shared stage's probe rows were computed with (reused when equal).
    probe_settings: Mapping[str, Any] = field(default_factory=dict, metadata=HIDDEN)


@dataclass(frozen=True)
class RowFacts:
    """What every result row records of the run's settings besides the stages' own."""

    train_task: str  # target.train_task ("" for a retrieval target)
    select_on: str  # target | train_task
    lr_target: float | None  # the target's learning rate (scale.lora.lr under LoRA), as configured


@dataclass(frozen=True)
class MixturePlan:
    """A mixture stage's members left out and how its batches are drawn (xlt/data/mixture.py)."""

    not_trained: tuple[str, ...]  # left out by intermediate.only
    skip_members: tuple[str, ...]  # left out when their data cannot load (intermediate.skip_members)
    cap: int | None  # sampling: p(task) ∝ min(n_t, cap) ** (1 / temperature)
    temperature: float
    steps_per_epoch: int | None  # null: jiant's count from the members' sizes


@dataclass(frozen=True)
class AnalysisPlan:
    """A target's dev sets scored after selection, never selected on (xlt/evaluation/analysis_dev.py)."""

    dev_split: str | None  # target.dev_split as configured (null: each spec's own)
    heldout: bool  # the English dev examples outside the selection subset
    dev_languages: Any  # target.eval_dev_languages: false | true | a tuple of languages
    max_seq_length: int
    max_eval_examples: int | None
    val_subset: int | None


def reuse_plan(cfg: DictConfig, sweep_dir: Path | None) -> ReusePlan:
    root = cfg.reuse.dir or (str(Path(sweep_dir) / ROOT_NAME) if sweep_dir is not None else None)
    safe = "".join(
        c if c.isalnum() or c in "._-" else "_" for c in f"{cfg.model.name}-{cfg.intermediate.name}"
    )
    shared = bool(cfg.reuse.intermediate) and root is not None
    probe = {"probe": to_container(cfg.probe), "retrieval": to_container(cfg.retrieval)}
    return ReusePlan(
        shared,
        str(root) if shared else None,
        cfg.reuse.wait_timeout_min,
        cfg.reuse.code,
        f"{safe}-s{cfg.seed}",
        freeze(probe),
    )


def stage_lr(cfg: DictConfig, stage: DictConfig) -> float:
    """The learning rate a stage trains at: its own, or ``scale.lora.lr`` under LoRA."""
    lora_lr = cfg.scale.lora.get("lr")
    return float(lora_lr if cfg.scale.peft == "lora" and lora_lr is not None else stage.lr)


def row_facts(cfg: DictConfig) -> RowFacts:
    target = cfg.target
    lr = stage_lr(cfg, target) if target.get("lr") is not None else None
    return RowFacts(target.train_task or "", target.get("select_on") or "target", lr)


def mixture_plan(stage: DictConfig, tasks: Sequence[str]) -> MixturePlan:
    only, sampling = stage.only, stage.sampling
    return MixturePlan(
        tuple(t for t in tasks if only is not None and t not in only),
        tuple(stage.get("skip_members") or ()),
        sampling.cap,
        sampling.temperature,
        sampling.steps_per_epoch,
    )


def _languages(option: Any) -> Any:
    return tuple(option) if isinstance(option, ListConfig) else option


def analysis_plan(stage: DictConfig) -> AnalysisPlan:
    return AnalysisPlan(
        stage.get("dev_split"),
        bool(stage.get("eval_dev_heldout", True)),
        _languages(stage.get("eval_dev_languages", False)),
        stage.max_seq_length,
        stage.get("max_eval_examples"),
        stage.get("val_subset"),
    )


@dataclass(frozen=True)
class ConfigRecord:
    """The validated config as plain data: what ``config.yaml`` holds (``${oc.env:...}`` unresolved), what
    the config lock compares, the W&B run config, and the intermediate stage's reuse-key material."""

    public: Mapping[str, Any]  # xlt.public_config.public_container
    resolved: Mapping[str, Any]  # every value resolved (xlt.schema.to_container)
    yaml: str  # config.yaml's text

    @classmethod
    def of(cls, cfg: DictConfig) -> ConfigRecord:
        return cls(freeze(public_container(cfg)), freeze(to_container(cfg)), public_yaml(cfg))


@dataclass(frozen=True)
class RunSections:
    model: ModelPlan
    scale: ScalePlan
    optim: OptimPlan
    trainer: TrainerPlan
    logger: LoggerPlan
    data: DataPlan


DEBUG_TRAINER_KEYS = {
    "fast_dev_run": False,
    "overfit_batches": 0.0,
    "limit_train_batches": 1.0,
    "limit_val_batches": 1.0,
    "limit_test_batches": 1.0,
}


def debug_mode(trainer: Mapping[str, Any]) -> str:
    """What makes this a debug or partial run ('' when nothing does): the ``trainer`` settings of
    debug=fdr/limit/overfit or set by hand, e.g. ``fast_dev_run=True`` or ``limit_test_batches=2``."""
    parts = []
    for key, default in DEBUG_TRAINER_KEYS.items():
        value = trainer.get(key)
        if value is not None and value != default and not (key.startswith("limit_") and value == 1):
            parts.append(f"{key}={value}")
    return ",".join(parts)


def _lora(lora: DictConfig) -> LoraPlan:
    return LoraPlan(lora.r, lora.alpha, lora.dropout, tuple(lora.target_modules or ()), lora.get("lr"))


def logger_plan(logger: DictConfig) -> LoggerPlan:
    """The :class:`LoggerPlan` of a validated ``logger`` section."""
    return LoggerPlan(
        logger.kind,
        logger.mode,
        logger.project,
        logger.entity,
        logger.group,
        tuple(logger.tags),
        str(logger.run_id) if logger.get("run_id") else None,
        bool(logger.get("log_model")),
    )


def run_sections(cfg: DictConfig) -> RunSections:
    """The run-wide sections of a validated config (see the module docstring)."""
    from xlt.training.strategies import is_sharded

    model, scale, logger, data = cfg.model, cfg.scale, cfg.logger, cfg.data
    model_plan = ModelPlan(
        model.family,
        model.get("arch"),
        model.source,
        model.hub_id,
        model.revision,
        model.dtype,
        model.params,
        freeze(to_container(model)),
    )
    strategy = scale.strategy
    scale_plan = ScalePlan(
        scale.name,
        strategy if isinstance(strategy, str) else freeze(to_container(strategy)),
        is_sharded(strategy),
        scale.devices,
        scale.num_nodes,
        bool(scale.activation_checkpointing),
        scale.peft,
        _lora(scale.lora),
    )
    optim = cfg.optim
    return RunSections(
        model_plan,
        scale_plan,
        OptimPlan(optim.weight_decay, optim.warmup_ratio, optim.adam_epsilon, optim.max_grad_norm),
        TrainerPlan(freeze(to_container(cfg.trainer)), debug_mode(cfg.trainer)),
        logger_plan(logger),
        DataPlan(data.dir, data.cache_dir, data.get("hub_mirror"), freeze(data.get("hub_revisions"))),
    )
