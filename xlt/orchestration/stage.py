"""The stage executor: one stage of the plan, fitted, selected, evaluated, its weights handed on.

A trained stage fits fresh heads (and the session's encoder) on English data, selects the checkpoint
on English dev, then scores dev and (a target) every language's test set; a stage finished in an
earlier launch, or given weights to evaluate (``xlt.evaluate``), is loaded instead, and a preempted
one resumes from its last checkpoint. A retrieval target and the probes run a retrieval evaluator on
the encoder. Full vs sharded (FSDP) weights: the session's :class:`~xlt.orchestration.weights.WeightHandler`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from xlt.data.datamodule import EvalSet, StageData, StageDataModule, prepare_stage_data
from xlt.data.mixture import log_mixture, prepare_mixture_data
from xlt.evaluation import RetrievalRun, evaluate_retrieval
from xlt.evaluation.analysis_dev import analysis_eval_rows, analysis_sets
from xlt.modeling.heads import build_head
from xlt.modeling.module import TransferModule
from xlt.orchestration.plan import EvalTarget, StagePlan
from xlt.orchestration.reuse import SharedStage
from xlt.orchestration.rundir import (
    FINAL_CKPT,
    LAST_CKPT,
    PREDICTIONS_DIR,
    PREVIOUS_CKPT,
    RunState,
    is_global_zero,
    resume_checkpoint,
)
from xlt.orchestration.session import RunSession
from xlt.results.rows import ResultRow, scored_counts
from xlt.results.submission import write_predictions
from xlt.tasks.registry import get_mixture, get_task
from xlt.tasks.spec import TaskSpec
from xlt.training.callbacks import (
    Preempted,
    rng_states,
    rng_states_from_json,
    rng_states_to_json,
    set_rng_states,
)
from xlt.training.lightning_adapter import logged_steps
from xlt.training.loggers import log_checkpoint
from xlt.training.sharded_ckpt import remove
from xlt.training.trainer import build_trainer, end_of_stage_collect, release, wait_for_rank_zero

log = logging.getLogger(__name__)


@dataclass
class Fitted:
    """A stage's module holding its selected weights, and where those weights are."""

    module: TransferModule
    weights: Path


class StageExecutor:
    """Executes stages of the plan in a :class:`RunSession`."""

    def __init__(self, session: RunSession) -> None:
        self.s = session

    # -- retrieval: probes and retrieval targets ---------------------------------------------------

    def probe(self, stage: str, probes: tuple[EvalTarget, ...]) -> None:
        """Retrieval probes on the current encoder (e.g. Tatoeba before and after intermediate training)."""
        for target in probes:
            self.s.rows.extend(self.retrieval(target, stage))

    def retrieval(self, target: EvalTarget, stage: str) -> list[ResultRow]:
        """``target``'s retrieval evaluator (xlt.evaluation) on the current encoder; rows logged.

        Rank 0 alone evaluates, once, whatever launched the job (Lightning's local launcher, torchrun,
        SLURM's one task per GPU): a lean rank's encoder is a meta-device skeleton, and DDP ranks would
        repeat the whole mining. The other ranks get no rows (only rank 0 writes them) and wait for
        rank 0 when a process group is up (xlt.training.trainer.wait_for_rank_zero); before the first Trainer
        there is none, and they go on to it, whose set-up waits for rank 0."""
        spec = get_task(target.task)
        if not is_global_zero():
            rank = getattr(rank_zero_only, "rank", 0)
            log.info("%s %s: retrieval runs on rank 0; rank %d waits", stage, spec.name, rank)
            wait_for_rank_zero()
            return []
        try:  # from the first line: whatever fails on rank 0, the waiting ranks are told
            write = self.write_predictions if target.predictions else None
            run = RetrievalRun(
                self.s.model.encoder,
                self.s.model.tokenizer,
                self.s.settings.source,
                self.s.settings.data_dir,
                target.layer if target.layer is not None else -1,
                target.batch_size,
                target.max_seq_length,
                self.s.skip,
                write,
            )
            log.info("%s %s: retrieval on rank 0, %d language(s)", stage, spec.name, len(target.languages))
            rows = evaluate_retrieval(spec, stage, list(target.languages), target.max_examples, run)
        except BaseException as err:  # the waiting ranks must not wait for ever: they stop too
            try:
                wait_for_rank_zero(f"{stage} {spec.name}: {type(err).__name__}: {err}")
            except Exception as gone:  # e.g. the same SIGTERM already ended them: rank 0's error stands
                log.warning("%s %s: could not tell the waiting ranks (%s)", stage, spec.name, gone)
            raise
        wait_for_rank_zero()
        self.s.log_rows(rows)
        return rows

    # -- a trained stage ---------------------------------------------------------------------------

    def run(self, plan: StagePlan, home: SharedStage | None = None) -> None:
        """Train (or resume, or load) the stage, then evaluate it. ``home``: the shared folder of an
        intermediate stage (xlt/orchestration/reuse.py), whose state and checkpoints are used instead
        of the run directory's; it is always resumed (it is no one job's to start over). An
        evaluation-only stage (``plan.weights``, xlt.evaluate) scores those weights, training nothing."""
        if not plan.trains:
            self.s.rows.extend(self.retrieval(plan.evaluation[0], plan.name))
            return
        weights = Path(plan.weights) if plan.weights else None
        state = RunState.load(home.state_path) if home is not None else self.s.state
        resume = self.s.plan.resume or home is not None
        done = state.stage(plan.name) if resume and weights is None else None
        data = self.stage_data(plan, trains=done is None and weights is None)
        assert plan.batch is not None
        dm = StageDataModule(
            data,
            self.s.model.tokenizer,
            plan.batch.per_device,
            plan.batch.eval_batch_size,
            self.s.plan.seed,
            self.s.plan.num_workers,
            plan.batch.accumulate,
        )
        module, mixture_info = self._module(plan, data)
        self.s.model.weights.prepare(module)
        ckpt_dir = home.ckpt_dir if home is not None else self.s.run_dir / plan.checkpoint.dir  # type: ignore[union-attr]
        if weights is not None or done is not None:
            fitted = self._load(plan, module, done, ckpt_dir, weights)
        else:
            fitted = self._fit(plan, module, data, dm, ckpt_dir, resume, state, mixture_info)
        self._evaluate(plan, data, dm, fitted)
        self.s.model.weights.end_stage()
        del module, fitted, dm, data
        end_of_stage_collect()

    def stage_data(self, plan: StagePlan, trains: bool = True) -> StageData:
        """The stage's featurised English training and dev sets (and, with an evaluation target, every
        language's test set); a set without data is skipped in one line."""
        if plan.kind == "mixture":
            mixture = get_mixture(plan.task)
            assert mixture is not None
            data = prepare_mixture_data(mixture, plan, self.s.settings)
        else:
            assert plan.selection is not None and plan.train_task is not None and plan.max_seq_length
            test = next((t for t in plan.evaluation if t.kind == "head"), None)
            data = prepare_stage_data(
                task=get_task(plan.task),
                train_task=get_task(plan.train_task),
                train_split=plan.train_split,
                dev_split=plan.selection.dev_split,
                dev_task=get_task(plan.selection.dev_task),
                test_split=test.split if test is not None else None,
                languages=list(test.languages) if test is not None else [],
                settings=self.s.settings,
                max_len=plan.max_seq_length,
                max_train=plan.max_train_examples,
                max_eval=plan.max_eval_examples,
                val_subset=plan.selection.val_subset,
            )
            if (
                test is not None
            ):  # a target: dev scored after selection, never selected on (held-out en, other languages)
                dev_spec = get_task(plan.selection.dev_task)
                assert plan.analysis is not None
                data.analysis, skipped = analysis_sets(
                    get_task(plan.task), dev_spec, plan.analysis, self.s.settings
                )
                data.skipped.extend(skipped)
        for line in data.skipped:
            self.s.skip(line)
        n_train = sum(map(len, data.mixture.features)) if data.mixture else len(data.train or ())
        if trains:
            log.info("%s: training %s on %s (%d examples)", plan.name, plan.task, data.train_origin, n_train)
        else:  # a finished stage (a relaunch, xlt.evaluate): its selected weights are scored, nothing trains
            log.info("%s: evaluating %s (trained in an earlier launch)", plan.name, plan.task)
        return data

    def _module(self, plan: StagePlan, data: StageData) -> tuple[TransferModule, dict[str, Any] | None]:
        """The stage's fresh module (heads on the session's encoder), and a mixture's sampling record."""
        encoder, optim = self.s.model.encoder, self.s.plan.optim
        hidden, pooling = encoder.config.hidden_size, self.s.plan.pooling
        assert plan.lr is not None and plan.batch is not None and plan.epochs is not None
        if data.mixture is not None:
            module = TransferModule.for_mixture(
                encoder, data.mixture, plan.lr, optim, data.val, hidden, pooling
            )
            batch = plan.batch
            info = log_mixture(
                data.mixture,
                batch.per_device,
                batch.accumulate,
                self.s.plan.seed,
                plan.epochs,
                self.s.logger,
                batch.devices,
            )
            return module, info
        spec = get_task(plan.task)
        head = build_head(spec, hidden, pooling)
        module = TransferModule(
            encoder, head, spec, plan.lr, optim, val_sets=data.val, test_sets=[*data.test, *data.analysis]
        )
        return module, None

    def _load(
        self,
        plan: StagePlan,
        module: TransferModule,
        done: dict[str, Any] | None,
        ckpt_dir: Path,
        weights: Path | None,
    ) -> Fitted:
        """A stage finished in an earlier launch (``done``, its state entry), or given ``weights``."""
        logged_step = plan.logged_step
        if weights is None:
            assert done is not None
            log.info(
                "%s: finished in an earlier launch; loading %s",
                plan.name,
                done.get("best") or "its final weights",
            )
            weights = Path(done["best"]) if done.get("best") else ckpt_dir / FINAL_CKPT
            logged_step = int(done.get("logged_step", 0))
        self.s.eval_step = logged_step
        module = self.s.model.weights.selected(module, weights)
        if done is not None and done.get("rng"):
            # The generators as the uninterrupted run left this stage: later stages draw the same.
            set_rng_states(rng_states_from_json(done["rng"]))
        return Fitted(module, weights)

    def _fit(
        self,
        plan: StagePlan,
        module: TransferModule,
        data: StageData,
        dm: StageDataModule,
        ckpt_dir: Path,
        resume: bool,
        state: RunState,
        mixture_info: dict[str, Any] | None,
    ) -> Fitted:
        """Fit, select (the best checkpoint, or the final weights where nothing was selected), and
        record the finished stage in ``state``."""
        assert plan.batch is not None and plan.selection is not None
        monitor = plan.selection.monitor if data.val else None
        trainer = self._trainer(plan, data, plan.batch.accumulate, ckpt_dir, monitor)
        last = ckpt_dir / LAST_CKPT
        found = resume_checkpoint(ckpt_dir) if resume else None
        if found:
            log.info("%s: resuming from %s", plan.name, found)
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=str(found) if found else None, weights_only=True)
        except SIGTERMException:
            raise Preempted(_preempted_line(plan.name, trainer, last)) from None
        selector = trainer.checkpoint_callback
        best = selector.best_model_path if isinstance(selector, ModelCheckpoint) else ""
        final = not best
        if final:  # no selection happened (fast_dev_run or no dev set): keep the final weights
            best = str(ckpt_dir / FINAL_CKPT)
            trainer.save_checkpoint(best, weights_only=True)
        module = self.s.model.weights.selected(module, Path(best), holds_them=final)
        # Lightning's logger axis: the fit's last step (where its own epoch-end validation landed).
        self.s.eval_step = max(0, logged_steps(trainer) - 1)
        extra = {"mixture": mixture_info} if mixture_info else {}
        state.mark_stage(
            plan.name,
            best=best,
            task=plan.task,
            train=data.train_origin,
            steps=trainer.global_step,
            logged_step=self.s.eval_step,
            rng=rng_states_to_json(rng_states()),
            selection=self.s.settings.pop_selections(),
            **extra,
        )
        log_checkpoint(
            self.s.plan.logger, self.s.logger, Path(best), plan.name, trainer.global_step
        )  # logger.log_model
        release(trainer)  # nothing of the fit (module, optimizer, FSDP wrapper) outlives the stage
        del trainer, selector
        if is_global_zero():
            remove(last)  # the stage is done; its resume point is no longer needed (file or directory)
            remove(ckpt_dir / PREVIOUS_CKPT)
        return Fitted(module, Path(best))

    def _evaluate(self, plan: StagePlan, data: StageData, dm: StageDataModule, fitted: Fitted) -> None:
        """Score the selected weights on dev and test (rows, predictions), and hand them on: the
        session's encoder holds them afterwards (unwrapped, under FSDP)."""
        module, weights, handler = fitted.module, fitted.weights, self.s.model.weights
        evaluator = self._trainer(plan, data, 1, None, None)
        predictions = any(t.predictions for t in plan.evaluation)
        try:
            if data.val:
                evaluator.validate(module, datamodule=dm, verbose=False)
                if evaluator.received_sigterm:  # Lightning notes SIGTERM in validate/test but may finish
                    raise SIGTERMException
            if data.test or data.analysis:
                fresh = handler.for_test(module, weights, validated=bool(data.val))
                if fresh is not None:
                    module = fresh
                    release(evaluator)
                    evaluator = self._trainer(plan, data, 1, None, None)
                if predictions:
                    module.collect_predictions()
                evaluator.test(module, datamodule=dm, verbose=False)
            if evaluator.received_sigterm:
                raise SIGTERMException
        except SIGTERMException:
            raise Preempted(
                f"preempted (SIGTERM) while evaluating the {plan.name} stage; its training is saved, "
                "relaunch the same command to evaluate it again"
            ) from None
        release(evaluator)
        del evaluator
        if data.test and predictions:
            self._write_head_predictions(get_task(plan.task), data.test, module.predictions)
        self._stage_rows(plan.name, data, module)
        rank_zero_only(log.info)("%s: %s done (weights: %s)", plan.name, plan.task, weights)
        encoder = handler.next_encoder(module, weights)
        if (
            encoder is not None
        ):  # the evaluator wrapped this module's encoder: the next stage gets a fresh one
            self.s.model.encoder = encoder

    def _stage_rows(self, stage: str, data: StageData, module: TransferModule) -> None:
        rows = analysis_eval_rows(
            stage, data.val, data.test, data.analysis, module.scores, module.parts, module.selection_key
        )
        if self.s.ctx.extra["debug"]:  # n_examples: what was scored (dev too), not the set's size
            rows = scored_counts(rows, [*data.val, *data.test, *data.analysis], module.scored)
        self.s.rows.extend(rows)
        self.s.log_rows(rows, already_logged=True)

    def _write_head_predictions(
        self, spec: TaskSpec, sets: list[EvalSet], predicted: dict[str, dict[int, Any]]
    ) -> None:
        """Write each test language's predictions in the submission layout; a language with
        unpredicted examples (e.g. limit_test_batches) is not written, and says so in one line."""
        fmt = spec.prediction_format
        for s in sets:
            by_example = predicted.get(s.key, {})
            if len(by_example) < len(s):
                self.s.skip(
                    f"predictions {spec.name}/{s.split}-{s.lang}: only {len(by_example)} of {len(s)} "
                    "examples were predicted; file not written"
                )
                continue
            ordered = [by_example[i] for i in range(len(s))]
            content: Any = ordered
            if fmt == "qa":
                content = {str(s.examples[i]["id"]): text for i, text in enumerate(ordered)}
            self.write_predictions(spec.name, s.split, s.lang, fmt, content)

    def write_predictions(self, task: str, split: str, lang: str, fmt: str, content: Any) -> None:
        if is_global_zero():
            write_predictions(self.s.run_dir / PREDICTIONS_DIR, task, split, lang, fmt, content)

    def _trainer(
        self, plan: StagePlan, data: StageData, accumulate: int, ckpt_dir: Path | None, monitor: str | None
    ) -> pl.Trainer:
        return build_trainer(
            self.s.plan,
            plan,
            data,
            accumulate,
            logger=self.s.logger,
            run_dir=self.s.run_dir,
            ckpt_dir=ckpt_dir,
            monitor=monitor,
            stage=plan.name if ckpt_dir else "",
            eval_step=self.s.eval_step,
        )


def _preempted_line(stage: str, trainer: pl.Trainer, last: Path) -> str:
    where = str(last) if last.exists() else "none yet (the stage restarts)"
    return (
        f"preempted (SIGTERM) during {stage} training at step {trainer.global_step}; resume point: "
        f"{where}; relaunch the same command to resume"
    )
