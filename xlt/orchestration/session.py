"""The run context: what every part of a run shares while it executes its plan.

:class:`RunSession` holds the plan, the run directory and its state (state.json), the tokenizer and
the encoder the stages hand on to each other, the data settings, the logger, the result rows with
their context, and what was skipped. It is built once (the encoder loaded, lean under FSDP) and
closed once; the stage executor (xlt/orchestration/stage.py) and the intermediate phase
(xlt/orchestration/intermediate.py) work through it. SIGTERM is handled around the whole session
(xlt/training/preemption.py, :func:`xlt.orchestration.run.run`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from xlt.data.datamodule import DataSettings
from xlt.modeling.encoder import (
    WEIGHT_SOURCES,
    add_lora,
    count_parameters,
    encoder_skeleton,
    load_encoder,
    load_tokenizer,
    resolved_revision,
)
from xlt.orchestration.plan import RunPlan
from xlt.orchestration.reuse import code_version
from xlt.orchestration.rundir import RESULTS_FILE, STATE_FILE, RunState, is_global_zero
from xlt.orchestration.weights import WeightHandler, weight_handler
from xlt.results.rows import ResultRow, RunContext, write_results
from xlt.tasks import hub
from xlt.tasks.loading import resolve_source
from xlt.training.loggers import build_logger, close_wandb, log_results, log_rows
from xlt.training.strategies import precision_policy
from xlt.training.trainer import resolve_precision
from xlt.utils.console import file_only
from xlt.utils.frozen import thaw

log = logging.getLogger(__name__)


@dataclass
class Model:
    """The encoder the stages train in turn, its tokenizer, and how its weights move between them."""

    tokenizer: Any
    encoder: Any
    weights: WeightHandler
    lean: bool  # an FSDP rank other than 0, whose encoder is a meta-device skeleton
    revision: str | None  # the hub commit the weights came from


@dataclass
class RunSession:
    """The run context (see the module's docstring); :meth:`open` builds it."""

    plan: RunPlan
    run_dir: Path
    sweep_dir: Path | None
    state: RunState
    settings: DataSettings
    model: Model
    ctx: RunContext
    logger: Any = None
    rows: list[ResultRow] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    eval_step: int = 0  # the logger step of evaluation metrics: the optimizer steps of the evaluated weights

    @classmethod
    def open(cls, plan: RunPlan, sweep_dir: Path | None = None) -> RunSession:
        run_dir, data = Path(plan.run_dir), plan.data
        source, data_dir = resolve_source(plan.data_source, data.dir)
        state = RunState.load(run_dir / STATE_FILE)
        # A relaunch reads the dataset commits this run read first (the model's: _model_section below).
        hub_data = {"hub_mirror": data.hub_mirror, "hub_revisions": thaw(data.hub_revisions)}
        hub.configure_from(hub_data, hub.pins(state.data.get("hub_reads", {}), data.hub_mirror))
        cache_dir = Path(data.cache_dir).expanduser()
        model_section = _model_section(plan, state)
        tokenizer = load_tokenizer(model_section, cache_dir)
        settings = DataSettings(source, data_dir, cache_dir, tokenizer, seed=plan.seed)
        pl.seed_everything(plan.seed, workers=True)
        model = _load_model(plan, model_section, cache_dir, tokenizer)
        state.pin_model(model.revision)
        ctx = _row_context(plan, model, source, model_section.revision)
        session = cls(plan, run_dir, sweep_dir, state, settings, model, ctx)
        session.logger = build_logger(plan.logger, plan.config.public, run_dir, ctx)
        return session

    def skip(self, line: str) -> None:
        """A set without data, or a prediction file not written: listed once in the report."""
        self.skipped.append(line)
        rank_zero_only(log.warning)("skipped: %s", line, extra=file_only())

    def log_rows(self, rows: list[ResultRow], already_logged: bool = False) -> None:
        log_rows(self.logger, rows, self.eval_step, already_logged)

    def add_rows(self, rows: list[ResultRow]) -> None:
        self.rows.extend(rows)
        self.log_rows(rows)

    def relabel(self, **fields: Any) -> None:
        """Change the rows' context (e.g. a mixture trained without some members)."""
        self.ctx = replace(self.ctx, **fields)

    def finish(self) -> None:
        """Write results.jsonl and mark the run finished (rank 0)."""
        if not is_global_zero():
            return
        self.state.save()  # merges this process's hub reads into state.json's hub_reads
        self.ctx.extra["data_commits"] = hub.commits_label(self.state.data.get("hub_reads", {}))
        if self.logger and self.plan.logger.kind == "wandb":  # W&B: the commits beside the run's config
            self.logger.experiment.config.update(
                {
                    "data_commits": self.ctx.extra["data_commits"],
                    "model_revision": self.ctx.extra["model_revision"],
                },
                allow_val_change=True,
            )
        write_results(self.run_dir / RESULTS_FILE, self.rows, self.ctx)
        self.state.data["finished"] = True
        self.state.data["skipped"] = self.skipped
        self.state.save()
        log_results(self.logger, self.rows)

    def close(self) -> None:
        close_wandb(self.plan.logger, self.logger)


def _model_section(plan: RunPlan, state: RunState) -> DictConfig:
    """The model section xlt.modeling.encoder loads from: the plan's, with the hub commit this run
    first loaded when the model file names no revision (a relaunch resumes on the same weights)."""
    section = thaw(plan.encoder.section)
    pinned = state.pinned_revision(plan.encoder.source, plan.encoder.revision)
    if pinned is not None:
        section["revision"] = pinned
    return OmegaConf.create(section)


def _load_model(plan: RunPlan, model_section: Any, cache_dir: Path, tokenizer: Any) -> Model:
    """The encoder (with LoRA and activation checkpointing as the scale asks) and its weight handler.
    Lean loading: under FSDP, ranks other than 0 build the encoder on the meta device and get rank
    0's weights when FSDP wraps it (sync_module_states); a random encoder is built anyway."""
    scale = plan.scale
    sharded = scale.sharded
    source = WEIGHT_SOURCES[plan.encoder.source]
    lean = sharded and not is_global_zero() and source.pretrained
    if lean:
        log.info(
            "rank %d: encoder built on the meta device; its weights come from rank 0 (sync_module_states)",
            getattr(rank_zero_only, "rank", 0),
        )
    encoder = (encoder_skeleton if lean else load_encoder)(model_section, cache_dir)
    revision = resolved_revision(encoder) if source.hub_commit else None
    if scale.activation_checkpointing:
        encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if scale.peft == "lora":
        encoder = add_lora(encoder, scale.lora)
    return Model(tokenizer, encoder, weight_handler(sharded, lean), lean, revision)


def _row_context(plan: RunPlan, model: Model, source: str, pinned: str | None) -> RunContext:
    """What every result row of the run records besides its score."""
    encoder = model.encoder
    n_params = count_parameters(encoder)
    stages = {s.name: s for s in plan.stages}
    inter, target = stages.get("intermediate"), stages["target"]
    return RunContext(
        model=plan.model,
        model_params=n_params,
        intermediate=inter.task if inter is not None else "none",
        target=target.task,
        train_task=plan.rows.train_task,
        seed=plan.seed,
        git_commit=code_version(diff_hash=False),
        data_source=source,
        peft=plan.scale.peft,
        select_on=plan.rows.select_on,
        run_dir=plan.run_dir,
        extra={
            "model_params_published": plan.encoder.params,
            "model_family": plan.encoder.family,
            "model_params_non_embedding": n_params - encoder.get_input_embeddings().weight.numel(),
            "trainable_params": sum(p.numel() for p in encoder.parameters() if p.requires_grad),
            "scale": plan.scale.name,
            "precision_policy": precision_policy(
                resolve_precision(plan.precision), thaw(plan.scale.strategy)
            ),
            "model_revision": model.revision or pinned or "",  # the hub commit of the weights
            # The learning rates the stages train at (LoRA has its own: scale.lora.lr).
            "lr_intermediate": inter.lr if inter is not None else None,
            "lr_target": plan.rows.lr_target,
            "debug": plan.trainer.debug,  # "" for a real run; xlt.results leaves the others out
        },
    )
