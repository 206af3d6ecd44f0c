"""The run plan: what a run will do, decided once from the validated config and the task specs.

:func:`build_plan` turns a validated config (xlt.config.validate) into a frozen :class:`RunPlan`:
the stages in order (task or mixture members, splits, sequence length, batch plan, selection recipe,
checkpoint policy, evaluation targets), the probes, the intermediate's reuse plan, and the run-wide
sections (xlt/orchestration/plan_sections.py: model, scale, optimiser, Trainer, logger, data, audit,
the config record). Nothing after planning reads the config. ``+show=plan`` prints it (:func:`format_plan`).
Facts stay where they live (sequence length: xlt.tasks.lengths; batch split: xlt.schema.batch_plan).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xlt.audit.sets import AuditScope, audit_scope, select_on_spec
from xlt.metrics.keys import metric_key
from xlt.orchestration.plan_sections import (
    HIDDEN,
    AnalysisPlan,
    ConfigRecord,
    DataPlan,
    LoggerPlan,
    MixturePlan,
    ModelPlan,
    OptimPlan,
    ReusePlan,
    RowFacts,
    ScalePlan,
    TrainerPlan,
    analysis_plan,
    mixture_plan,
    plain,
    reuse_plan,
    row_facts,
    run_sections,
    stage_lr,
)
from xlt.orchestration.rundir import CHECKPOINTS_DIR, LAST_CKPT, PREVIOUS_CKPT
from xlt.plan.host import checkpoint_format
from xlt.schema import MemberConfig, batch_plan
from xlt.tasks.lengths import seq_length
from xlt.tasks.loading import NeededFiles, needed_files
from xlt.tasks.registry import flatten_mixture, get_mixture, get_task


@dataclass(frozen=True)
class BatchPlan:
    """The stage's batch over the job's devices: ``per_device * devices * accumulate == batch_size``."""

    batch_size: int
    per_device: int
    accumulate: int
    devices: int
    eval_batch_size: int


@dataclass(frozen=True)
class SelectionPlan:
    """How the stage's checkpoint is selected on English dev (jiant's X-STILTs recipe)."""

    monitor: str  # the logged metric the best checkpoint maximises
    dev_task: str  # the spec whose dev split is read (target.select_on=train_task: the training task's)
    dev_split: str
    select_on: str
    val_check_every: int | None  # optimizer steps between validations (None: once per epoch)
    val_subset: int | None  # examples of each English dev set drawn for selection (None: all)
    patience: int | None  # validations without improvement before stopping (None: never)


@dataclass(frozen=True)
class CheckpointPlan:
    """Where and how the stage's checkpoints are written."""

    dir: str  # relative to the run directory (a shared intermediate stage: its own folder)
    format: str  # full (one file) | sharded (a torch distributed checkpoint directory)
    every_n_steps: int | None  # a resume point every N optimizer steps besides each validation
    rotation: tuple[str, ...] = (LAST_CKPT, PREVIOUS_CKPT)  # resume points, newest first


@dataclass(frozen=True)
class MemberPlan:
    """A task of a mixture stage."""

    task: str
    head: str
    train_split: str
    dev_split: str | None  # None: not scored on dev
    max_seq_length: int
    max_train_examples: int | None
    max_eval_examples: int | None


@dataclass(frozen=True)
class EvalTarget:
    """One evaluation: a head's test sets after training, or a retrieval task on the encoder."""

    task: str
    kind: str  # head | retrieval
    split: str
    languages: tuple[str, ...]
    max_examples: int | None
    batch_size: int
    max_seq_length: int
    retrieval: str = ""  # the retrieval kind (top1, mining) of a retrieval target or probe
    layer: int | None = None  # the encoder layer a retrieval embeds with
    predictions: str | None = None  # the submission format written (None: not written)


@dataclass(frozen=True)
class StagePlan:
    """One stage: trained (a task or a mixture) or retrieval-only (a target without training data)."""

    name: str  # intermediate | target
    task: str
    kind: str  # task | mixture | retrieval
    train_task: str | None = None
    train_split: str | None = None
    epochs: float | None = None
    lr: float | None = None
    max_seq_length: int | None = None
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    members: tuple[MemberPlan, ...] = ()
    batch: BatchPlan | None = None
    selection: SelectionPlan | None = None
    checkpoint: CheckpointPlan | None = None
    evaluation: tuple[EvalTarget, ...] = ()
    probes_after: tuple[EvalTarget, ...] = ()
    mixture: MixturePlan | None = None  # a mixture stage: members left out, sampling
    analysis: AnalysisPlan | None = None  # a target: the dev sets scored after selection
    # An evaluation-only stage (xlt.evaluate): these weights are scored, logged at logged_step; nothing trains.
    weights: str | None = None
    logged_step: int = 0

    @property
    def trains(self) -> bool:
        return self.kind != "retrieval"


@dataclass(frozen=True)
class RunPlan:
    """Everything a run will do, in order; built once by :func:`build_plan`."""

    run_dir: str
    model: str
    seed: int
    resume: bool
    data_source: str
    precision: str  # scale.precision as configured (auto is resolved on the machine that runs it)
    strategy: str
    pooling: str  # how a head reads the encoder's tokens (cls, mean, last; the family's when null)
    num_workers: int  # data-loader worker processes
    probes_pretrained: tuple[EvalTarget, ...]
    stages: tuple[StagePlan, ...]
    reuse: ReusePlan | None  # None: no intermediate stage
    encoder: ModelPlan
    scale: ScalePlan
    optim: OptimPlan
    trainer: TrainerPlan
    logger: LoggerPlan
    data: DataPlan
    rows: RowFacts  # what every result row records of the run's settings
    audit: AuditScope  # what the contamination audit compares (xlt/audit/sets.py)
    local_files: NeededFiles  # the English files a run with local data checks first
    config: ConfigRecord = field(metadata=HIDDEN)  # config.yaml, the config lock, W&B, the reuse key

    def stage(self, name: str) -> StagePlan | None:
        return next((s for s in self.stages if s.name == name), None)


def _probes(cfg: DictConfig) -> tuple[EvalTarget, ...]:
    out = []
    for name in cfg.probe.tasks:
        spec = get_task(name, role="probe")
        out.append(
            EvalTarget(
                task=name,
                kind="retrieval",
                split=spec.test_split,
                languages=tuple(cfg.probe.languages or spec.languages),
                max_examples=cfg.probe.max_examples,
                batch_size=cfg.retrieval.batch_size,
                max_seq_length=cfg.retrieval.max_seq_length,
                retrieval=spec.retrieval,
                layer=cfg.retrieval.layer,
            )
        )
    return tuple(out)


def _batch(cfg: DictConfig, stage: DictConfig) -> BatchPlan:
    world = cfg.scale.devices * cfg.scale.num_nodes
    per_device, accumulate = batch_plan(stage.batch_size, cfg.scale.per_device_batch_size, world)
    return BatchPlan(stage.batch_size, per_device, accumulate, world, stage.eval_batch_size)


def _checkpoint(cfg: DictConfig, folder: str) -> CheckpointPlan:
    return CheckpointPlan(folder, checkpoint_format(cfg.scale), cfg.scale.checkpoint_every_n_steps)


def _selection(stage: DictConfig, monitor: str, dev_task: str, dev_split: str) -> SelectionPlan:
    return SelectionPlan(
        monitor=monitor,
        dev_task=dev_task,
        dev_split=dev_split,
        select_on=stage.get("select_on") or "target",
        val_check_every=stage.get("val_check_every"),
        val_subset=stage.get("val_subset"),
        patience=stage.get("patience"),
    )


def _trained_fields(cfg: DictConfig, stage: DictConfig, name: str) -> dict[str, Any]:
    return {
        "train_split": stage.train_split,
        "epochs": float(stage.epochs),
        "lr": stage_lr(cfg, stage),
        "max_seq_length": stage.max_seq_length,
        "max_train_examples": stage.max_train_examples,
        "max_eval_examples": stage.max_eval_examples,
        "batch": _batch(cfg, stage),
        "checkpoint": _checkpoint(cfg, f"{CHECKPOINTS_DIR}/{name}"),
    }


def _mixture_stage(cfg: DictConfig, stage: DictConfig, mixture: Any) -> StagePlan:
    flat = flatten_mixture(mixture)
    members = []
    for task in flat.tasks:
        if stage.only is not None and task not in stage.only:
            continue
        member = stage.members.get(task) or MemberConfig()
        spec = get_task(task)
        scored = member.evaluate if member.evaluate is not None else task in flat.evaluated
        members.append(
            MemberPlan(
                task=task,
                head=flat.head_of[task],
                train_split=member.train_split,
                dev_split=(member.dev_split or spec.dev_split) if scored else None,
                max_seq_length=seq_length(stage, task),
                max_train_examples=member.max_train_examples or stage.max_train_examples,
                max_eval_examples=member.max_eval_examples or stage.max_eval_examples,
            )
        )
    fields = _trained_fields(cfg, stage, "intermediate")
    fields["train_split"] = None  # each member's own
    selection = _selection(
        stage, metric_key("dev", mixture.name, "en", "selection"), mixture.name, "(members)"
    )
    return StagePlan(
        "intermediate",
        mixture.name,
        "mixture",
        members=tuple(members),
        selection=selection,
        mixture=mixture_plan(stage, flat.tasks),
        **fields,
    )


def _task_stage(cfg: DictConfig, name: str, stage: DictConfig, test: bool) -> StagePlan:
    spec = get_task(stage.name, role=name)
    train_spec = get_task(stage.train_task) if name == "target" else spec
    dev_spec = select_on_spec(stage, spec, train_spec)
    dev_split = stage.dev_split or dev_spec.dev_split
    monitor = metric_key("dev", spec.name, "en", spec.metrics[0])
    evaluation: tuple[EvalTarget, ...] = ()
    if test:
        languages = tuple(stage.get("languages") or spec.languages)
        fmt = spec.prediction_format if cfg.predictions else None
        head = EvalTarget(
            spec.name,
            "head",
            spec.test_split,
            languages,
            stage.max_eval_examples,
            stage.eval_batch_size,
            stage.max_seq_length,
            predictions=fmt,
        )
        evaluation = (head,)
    return StagePlan(
        name,
        spec.name,
        "task",
        train_task=train_spec.name if train_spec is not None else None,
        selection=_selection(stage, monitor, dev_spec.name, dev_split),
        evaluation=evaluation,
        analysis=analysis_plan(stage) if test else None,
        **_trained_fields(cfg, stage, name),
    )


def _retrieval_target(cfg: DictConfig) -> StagePlan:
    stage = cfg.target
    spec = get_task(stage.name, role="target")
    target = EvalTarget(
        task=spec.name,
        kind="retrieval",
        split=spec.test_split,
        languages=tuple(stage.languages or spec.languages),
        max_examples=stage.max_eval_examples,
        batch_size=stage.eval_batch_size,
        max_seq_length=stage.max_seq_length,
        retrieval=spec.retrieval,
        layer=cfg.retrieval.layer,
        predictions=spec.prediction_format if cfg.predictions else None,
    )
    return StagePlan(
        "target", spec.name, "retrieval", max_seq_length=stage.max_seq_length, evaluation=(target,)
    )


def build_plan(cfg: DictConfig, run_dir: Path | str, sweep_dir: Path | None = None) -> RunPlan:
    """The plan of a validated config ``cfg`` run in ``run_dir`` (``sweep_dir``: a multirun's folder)."""
    probes = _probes(cfg)
    stages = []
    if cfg.intermediate is not None:
        mixture = get_mixture(cfg.intermediate.name)
        if mixture is not None:
            inter = _mixture_stage(cfg, cfg.intermediate, mixture)
        else:
            inter = _task_stage(cfg, "intermediate", cfg.intermediate, test=False)
        stages.append(dataclasses.replace(inter, probes_after=probes))
    if get_task(cfg.target.name, role="target").trainable:
        stages.append(_task_stage(cfg, "target", cfg.target, test=True))
    else:
        stages.append(_retrieval_target(cfg))
    strategy = cfg.scale.strategy
    sections = run_sections(cfg)
    return RunPlan(
        run_dir=str(run_dir),
        model=cfg.model.name,
        seed=cfg.seed,
        resume=cfg.resume,
        data_source=cfg.data.source,
        precision=str(cfg.scale.precision),
        strategy=strategy if isinstance(strategy, str) else str(strategy.get("_target_")),
        pooling=cfg.model.pooling,
        num_workers=cfg.data.num_workers,
        probes_pretrained=probes,
        stages=tuple(stages),
        reuse=reuse_plan(cfg, sweep_dir) if cfg.intermediate is not None else None,
        encoder=sections.model,
        scale=sections.scale,
        optim=sections.optim,
        trainer=sections.trainer,
        logger=sections.logger,
        data=sections.data,
        rows=row_facts(cfg),
        audit=audit_scope(cfg),
        local_files=needed_files(cfg),
        config=ConfigRecord.of(cfg),
    )


def evaluation_only(plan: RunPlan, weights: Path, logged_step: int) -> RunPlan:
    """``plan``'s target stage scoring ``weights`` (a target-stage checkpoint) instead of training:
    the plan ``xlt.evaluate`` executes. The plan must have no intermediate stage and no probes."""
    target = plan.stage("target")
    if target is None or len(plan.stages) != 1 or not target.trains or plan.probes_pretrained:
        raise ValueError("an evaluation-only plan has one trained target stage and no probes")
    evaluated = dataclasses.replace(target, weights=str(weights), logged_step=logged_step)
    return dataclasses.replace(plan, stages=(evaluated,))


def format_plan(plan: RunPlan) -> str:
    """The plan as YAML (what ``+show=plan`` prints): every field but the config record, stages in order."""
    return OmegaConf.to_yaml(OmegaConf.create(plain(plan)))
