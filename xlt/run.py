"""The X-STILTs run: pretrained encoder -> English intermediate task -> English target task ->
zero-shot evaluation on every language of the target, all in one run directory.

:func:`run` is the typed, testable core; ``xlt.train`` is only the Hydra entry point around it.
:class:`Runner` orders the three phases (probe the pretrained encoder; the intermediate stage,
xlt/intermediate.py; the target stage, trained or retrieval-only) over what xlt/stage.py provides.
Where the rest lives: the Trainer in xlt/trainer.py, callbacks in xlt/callbacks.py, loggers in
xlt/loggers.py, the run directory's files in xlt/orchestration/rundir.py, retrieval evaluation in xlt/evaluation/.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from xlt.config import validate
from xlt.console import file_only
from xlt.data.datamodule import DataSettings
from xlt.intermediate import IntermediatePhase
from xlt.loggers import build_logger, check_run_id, close_wandb, log_results
from xlt.modeling.encoder import (
    WEIGHT_SOURCES,
    add_lora,
    count_parameters,
    encoder_skeleton,
    load_encoder,
    load_tokenizer,
    resolved_revision,
)
from xlt.orchestration.reuse import code_version, launch_id
from xlt.orchestration.rundir import (
    CONFIG_FILE,
    RESULTS_FILE,
    STATE_FILE,
    RunDirError,
    RunState,
    check_same_config,
    has_progress,
    is_global_zero,
    rows_from_records,
    run_dir_lock,
    start_over,
)
from xlt.preemption import handling_sigterm
from xlt.public_config import public_yaml
from xlt.results.report import format_table
from xlt.results.rows import ResultRow, RunContext, atomic_write_text, read_results, write_results
from xlt.strategies import precision_policy
from xlt.tasks import hub
from xlt.tasks.loading import check_local_files, resolve_source
from xlt.tasks.registry import get_task
from xlt.trainer import debug_mode, resolve_precision, stage_lr

log = logging.getLogger(__name__)


class Runner(IntermediatePhase):
    """Carries what the stages share: config, run directory, encoder, tokenizer, logger, rows."""

    def __init__(self, cfg: DictConfig, run_dir: Path, sweep_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.sweep_dir = sweep_dir  # a Hydra multirun's folder: shared intermediate stages live under it
        source, data_dir = resolve_source(cfg.data.source, cfg.data.dir)
        self.state = RunState.load(run_dir / STATE_FILE)
        # A relaunch reads the dataset commits this run read first (the model's: pinned_model below).
        mirror = cfg.data.get("hub_mirror")
        pinned = hub.pins(self.state.data.get("hub_reads", {}), mirror)
        hub.configure_from(cfg.data, pinned)
        self.cache_dir = Path(cfg.data.cache_dir).expanduser()
        model_cfg = self.state.pinned_model(cfg.model)
        self.tokenizer = load_tokenizer(model_cfg, self.cache_dir)
        self.settings = DataSettings(source, data_dir, self.cache_dir, self.tokenizer, seed=cfg.seed)
        pl.seed_everything(cfg.seed, workers=True)
        # Lean loading: under FSDP, ranks other than 0 build the encoder on the meta device and get
        # rank 0's weights when FSDP wraps it (sync_module_states); a random encoder is built anyway.
        self.lean = self.sharded and not is_global_zero() and WEIGHT_SOURCES[cfg.model.source].pretrained
        if self.lean:
            log.info("rank %d: encoder built on the meta device; its weights come from rank 0 (sync_module_states)",
                     getattr(rank_zero_only, "rank", 0))  # fmt: skip
        loader = encoder_skeleton if self.lean else load_encoder
        self.encoder = loader(model_cfg, self.cache_dir)
        revision = resolved_revision(self.encoder) if WEIGHT_SOURCES[cfg.model.source].hub_commit else None
        self.state.pin_model(revision)
        if cfg.scale.activation_checkpointing:
            self.encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.scale.peft == "lora":
            self.encoder = add_lora(self.encoder, cfg.scale.lora)
        n_params = count_parameters(self.encoder)
        intermediate = cfg.intermediate.name if cfg.intermediate is not None else "none"
        self.ctx = RunContext(
            model=cfg.model.name,
            model_params=n_params,
            intermediate=intermediate,
            target=cfg.target.name,
            train_task=cfg.target.train_task or "",
            seed=cfg.seed,
            git_commit=code_version(diff_hash=False),
            data_source=source,
            peft=cfg.scale.peft,
            select_on=cfg.target.get("select_on") or "target",
            run_dir=str(run_dir),
            extra={
                "model_params_published": cfg.model.params,
                "model_family": cfg.model.family,
                "model_params_non_embedding": n_params - self.encoder.get_input_embeddings().weight.numel(),
                "trainable_params": sum(p.numel() for p in self.encoder.parameters() if p.requires_grad),
                "scale": cfg.scale.name,
                "precision_policy": precision_policy(
                    resolve_precision(str(cfg.scale.precision)), cfg.scale.strategy
                ),
                "model_revision": revision or model_cfg.revision or "",  # the hub commit of the weights
                # The learning rates the stages train at (LoRA has its own: scale.lora.lr).
                "lr_intermediate": stage_lr(cfg, cfg.intermediate) if cfg.intermediate is not None else None,
                "lr_target": stage_lr(cfg, cfg.target) if cfg.target.get("lr") is not None else None,
                "debug": debug_mode(cfg),  # "" for a real run; xlt.results leaves the others out
            },
        )
        self.logger = build_logger(cfg, run_dir, self.ctx)
        self.rows: list[ResultRow] = []
        self.eval_step = (
            0  # the logger step of evaluation metrics: the optimizer steps of the evaluated weights
        )
        self.skipped: list[str] = []

    # -- the phases ------------------------------------------------------------------------------

    def audit(self) -> None:
        """The contamination audit (xlt/audit.py), before any training: an overlap between a set the
        run trains or selects on and a test set of its target stops the run (ContaminationError, one
        line) unless the target's spec declares an exclusion; those are applied to every stage's
        loading. The counts go into state.json (``audit``) and every result row."""
        from xlt.audit import audit, missing_member, mixture_label
        from xlt.tasks.spec import DataError

        report = audit(self.cfg, self.settings.source, self.settings.data_dir)
        if missing := missing_member(self.cfg, report):  # a mixture never silently changes: stop early
            raise DataError(missing)
        rank_zero_only(log.info)("%s", report.format(), extra=file_only())
        self.state.data["audit"] = report.record()
        self.state.save()
        report.check()
        self.settings.exclude = report.removals()
        self.ctx.extra.update(report.row_fields())
        label = mixture_label(self.cfg, report)  # a mixture without some members: rows say what it trained
        if label is not None:
            self.ctx = replace(self.ctx, intermediate=label[0])
            self.ctx.extra.update(
                intermediate_mixture=self.cfg.intermediate.name, intermediate_members=",".join(label[1])
            )

    def target_phase(self) -> None:
        """Train the target on its English training task and evaluate every language zero-shot, or,
        for a retrieval target (no training data), evaluate the encoder as it is."""
        cfg = self.cfg
        target = get_task(cfg.target.name, role="target")
        if target.trainable:
            train_spec = get_task(cfg.target.train_task)
            self.train_stage("target", cfg.target, target, train_spec, test=True)
        else:
            languages = list(cfg.target.languages or target.languages)
            self.rows.extend(
                self.evaluate_retrieval(target, "target", languages, cfg.target.max_eval_examples)
            )

    def execute(self) -> list[ResultRow]:
        self.audit()
        self.probe("pretrained")
        if self.cfg.intermediate is not None:
            self.intermediate_phase()
        self.target_phase()
        return self.rows

    def finish(self) -> None:
        if not is_global_zero():
            return
        self.state.save()  # merges this process's hub reads into state.json's hub_reads
        self.ctx.extra["data_commits"] = hub.commits_label(self.state.data.get("hub_reads", {}))
        if self.logger and self.cfg.logger.kind == "wandb":  # W&B: the commits beside the run's config
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
        close_wandb(self.cfg, self.logger)


def print_report(rows: list[ResultRow], skipped: list[str]) -> str:
    """The per-language tables with the gap, as printed at the end of a run."""
    blocks = []
    for stage, task, split in dict.fromkeys((r.stage, r.task, r.split) for r in rows):
        blocks.append(format_table(rows, stage, task, split))
    # A language without data, and a prediction file not written (a partial run), each under its own heading.
    unwritten = [line for line in skipped if line.startswith("predictions ")]
    no_data = [line for line in skipped if line not in unwritten]
    for heading, lines in (("Skipped (no data)", no_data), ("Prediction files not written", unwritten)):
        if lines:
            blocks.append(f"{heading}:\n" + "\n".join(f"  {line}" for line in lines))
    text = "\n\n".join(b for b in blocks if b)
    rank_zero_only(print)("\n" + text + "\n")
    return text


def run(cfg: DictConfig, run_dir: Path, sweep_dir: Path | None = None) -> dict[str, float]:
    """Validate ``cfg``, run every stage into ``run_dir``, write ``results.jsonl``; return the summary
    metrics (``{split}/{task}/{language}/{metric}`` of the target stage), e.g. for a sweep objective.
    ``sweep_dir``: the multirun folder, under which jobs share their intermediate stages."""
    cfg = validate(cfg)
    launch_id()  # before Lightning starts other ranks as subprocesses: they inherit it (xlt/orchestration/reuse.py)
    run_dir = Path(run_dir)
    with run_dir_lock(run_dir):  # a second process in this run directory stops here, in one line
        return _run_locked(cfg, run_dir, sweep_dir)


def _run_locked(cfg: DictConfig, run_dir: Path, sweep_dir: Path | None) -> dict[str, float]:
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        state = RunState.load(run_dir / STATE_FILE)
    except RunDirError:
        if cfg.resume:
            raise
        state = RunState(run_dir / STATE_FILE, {})  # resume=false starts over: the old state is dropped
    check_run_id(cfg, run_dir)  # logger.run_id: only in the run directory of that W&B run
    results = run_dir / RESULTS_FILE
    if cfg.resume and has_progress(run_dir, state):
        if not (run_dir / CONFIG_FILE).is_file():
            raise RunDirError(f"{run_dir} holds an earlier launch's work but no {CONFIG_FILE} to check this "
                              "configuration against; restore it, or rerun with resume=false to start over")  # fmt: skip
        check_same_config(cfg, run_dir / CONFIG_FILE)
    if cfg.resume and state.data.get("finished") and results.is_file():
        rank_zero_only(log.info)("%s is finished; nothing to do (resume=false starts it over)", run_dir)
        try:
            rows = rows_from_records(read_results(results))
        except (ValueError, KeyError, TypeError) as err:
            detail = str(err) if isinstance(err, ValueError) else f"{results}: a row lacks {err}"
            raise RunDirError(f"{detail}; rerun with resume=false to compute the results again") from None
        print_report(rows, state.data.get("skipped", []))
        return _summary(rows)
    check_local_files(cfg)  # the English files a run needs are there, before anything is written
    languages = cfg.target.languages
    if languages is not None and "en" not in languages and "en" in get_task(cfg.target.name).languages:
        rank_zero_only(log.warning)("target.languages=[%s]: no English test, so no cross-lingual gap is reported "
                                    "(add en to measure it)", ",".join(languages))  # fmt: skip
    if not cfg.resume and is_global_zero():
        start_over(run_dir, state)
    if is_global_zero():
        atomic_write_text(run_dir / CONFIG_FILE, public_yaml(cfg))  # ${oc.env:...} not resolved
    with handling_sigterm():  # every rank ends with 143 within a bounded time (xlt/preemption.py)
        runner = Runner(cfg, run_dir, sweep_dir)
        try:
            rows = runner.execute()
            runner.finish()
        finally:
            runner.close()
    print_report(rows, runner.skipped)
    return _summary(rows)


def _summary(rows: list[ResultRow]) -> dict[str, float]:
    return {f"{r.split}/{r.task}/{r.language}/{r.metric}": r.value for r in rows if r.stage == "target"}
