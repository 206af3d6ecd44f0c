"""A training stage: fresh heads (and the shared encoder) fitted on English data, the checkpoint
selected on English dev, then dev and every language's test set evaluated; a finished stage is
loaded instead (a relaunch), and a preempted one resumes from its last checkpoint.

:class:`StageRunner` holds what the stages share (encoder, tokenizer, logger, result rows); the run
(xlt.run.Runner) builds it and orders the phases.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from xlt.audit import select_on_spec
from xlt.callbacks import Preempted, rng_states, rng_states_from_json, rng_states_to_json, set_rng_states
from xlt.console import file_only
from xlt.data.datamodule import DataSettings, EvalSet, StageData, StageDataModule, prepare_stage_data
from xlt.data.mixture import log_mixture, prepare_mixture_data
from xlt.evaluation import RetrievalRun, evaluate_retrieval
from xlt.loggers import log_checkpoint, log_rows
from xlt.modeling.heads import build_head
from xlt.modeling.module import TransferModule
from xlt.orchestration.lightning_adapter import logged_steps
from xlt.results.rows import ResultRow, RunContext, eval_rows, scored_counts
from xlt.results.submission import write_predictions
from xlt.orchestration.reuse import SharedStage
from xlt.orchestration.rundir import (
    FINAL_CKPT,
    LAST_CKPT,
    PREDICTIONS_DIR,
    PREVIOUS_CKPT,
    CheckpointError,
    RunState,
    is_global_zero,
    resume_checkpoint,
    stage_ckpt_dir,
)
from xlt.sharded_ckpt import NoStateDict, read_weights, remove
from xlt.strategies import is_sharded, materialize, meta_skeleton
from xlt.tasks.registry import get_task
from xlt.tasks.spec import MixtureSpec, TaskSpec
from xlt.trainer import (
    build_trainer,
    end_of_stage_collect,
    release,
    stage_batch_plan,
    stage_lr,
    wait_for_rank_zero,
)

log = logging.getLogger(__name__)


class StageRunner:
    """What the stages share (set by xlt.run.Runner): config, run directory, encoder, tokenizer,
    logger, result rows; and what a stage does with them (train, evaluate, probe)."""

    cfg: DictConfig
    run_dir: Path
    state: RunState
    settings: DataSettings
    tokenizer: Any
    encoder: Any
    lean: bool  # an FSDP rank other than 0, whose encoder is a meta-device skeleton
    logger: Any
    ctx: RunContext
    rows: list[ResultRow]
    eval_step: int  # the logger step of evaluation metrics: the optimizer steps of the evaluated weights
    skipped: list[str]

    def probe(self, stage: str) -> None:
        """Retrieval probes on the current encoder (e.g. Tatoeba before and after intermediate training)."""
        probe = self.cfg.probe
        if not probe.tasks:
            return
        for name in probe.tasks:
            spec = get_task(name, role="probe")
            languages = list(probe.languages or spec.languages)
            self.rows.extend(self.evaluate_retrieval(spec, stage, languages, probe.max_examples))

    def evaluate_retrieval(
        self, spec: TaskSpec, stage: str, languages: list[str], limit: int | None
    ) -> list[ResultRow]:
        """``spec``'s retrieval evaluator (xlt.evaluation) on the current encoder; rows logged. A
        retrieval target embeds with its stage's ``eval_batch_size`` and ``max_seq_length`` (null: the
        spec's), a probe with ``retrieval.*``.

        Rank 0 alone evaluates, once, whatever launched the job (Lightning's local launcher, torchrun,
        SLURM's one task per GPU): a lean rank's encoder is a meta-device skeleton, and DDP ranks would
        repeat the whole mining. The other ranks get no rows (only rank 0 writes them) and wait for
        rank 0 when a process group is up (xlt.trainer.wait_for_rank_zero); before the first Trainer
        there is none, and they go on to it, whose set-up waits for rank 0."""
        if not is_global_zero():
            log.info("%s %s: retrieval runs on rank 0; rank %d waits", stage, spec.name,
                     getattr(rank_zero_only, "rank", 0))  # fmt: skip
            wait_for_rank_zero()
            return []
        try:  # from the first line: whatever fails on rank 0, the waiting ranks are told
            retrieval = self.cfg.retrieval
            if stage == "target":
                batch_size, max_len = self.cfg.target.eval_batch_size, self.cfg.target.max_seq_length
            else:
                batch_size, max_len = retrieval.batch_size, retrieval.max_seq_length
            write = self._write_predictions if self.cfg.predictions and stage == "target" else None
            run = RetrievalRun(self.encoder, self.tokenizer, self.settings.source, self.settings.data_dir,
                               retrieval.layer, batch_size, max_len, self._skip, write)  # fmt: skip
            log.info("%s %s: retrieval on rank 0, %d language(s)", stage, spec.name, len(languages))
            rows = evaluate_retrieval(spec, stage, languages, limit, run)
        except BaseException as err:  # the waiting ranks must not wait for ever: they stop too
            try:
                wait_for_rank_zero(f"{stage} {spec.name}: {type(err).__name__}: {err}")
            except Exception as gone:  # e.g. the same SIGTERM already ended them: rank 0's error stands
                log.warning("%s %s: could not tell the waiting ranks (%s)", stage, spec.name, gone)
            raise
        wait_for_rank_zero()
        self._log_rows(rows)
        return rows

    def train_stage(
        self,
        stage: str,
        stage_cfg: DictConfig,
        spec: TaskSpec | MixtureSpec,
        train_spec: TaskSpec | None,
        test: bool,
        home: SharedStage | None = None,
    ) -> None:
        """Fit fresh heads (and the shared encoder) on English data, select on English dev, then
        evaluate dev (and, for targets, every language's test set). ``spec`` may be a mixture
        (several tasks, one head each or shared; see xlt/data/mixture.py). ``home``: the shared
        folder of an intermediate stage (xlt/orchestration/reuse.py), whose state and checkpoints are used instead
        of the run directory's; it is always resumed (it is no one job's to start over)."""
        stage_state = RunState.load(home.state_path) if home is not None else self.state
        resume = self.cfg.resume or home is not None
        done = stage_state.stage(stage) if resume else None  # trained in an earlier launch: evaluate only
        data = self._stage_data(stage, stage_cfg, spec, train_spec, test, trains=done is None)
        scale = self.cfg.scale
        per_device, accumulate = stage_batch_plan(self.cfg, stage_cfg)
        dm = StageDataModule(
            data,
            self.tokenizer,
            per_device,
            stage_cfg.eval_batch_size,
            self.cfg.seed,
            self.cfg.data.num_workers,
            accumulate,
        )
        hidden, pooling = self.encoder.config.hidden_size, self.cfg.model.pooling
        if data.mixture is not None:
            module = TransferModule.for_mixture(self.encoder, data.mixture, stage_lr(self.cfg, stage_cfg),
                                                self.cfg.optim, data.val, hidden, pooling)  # fmt: skip
            monitor = f"dev/{spec.name}/en/selection" if data.val else None
            world = scale.devices * scale.num_nodes
            mixture_info = log_mixture(
                data.mixture, per_device, accumulate, self.cfg.seed, stage_cfg.epochs, self.logger, world
            )
        else:
            assert isinstance(spec, TaskSpec)
            module = TransferModule(
                self.encoder, build_head(spec, hidden, pooling), spec, stage_lr(self.cfg, stage_cfg),
                self.cfg.optim, val_sets=data.val, test_sets=data.test,
            )  # fmt: skip
            monitor = f"{data.val[0].overall_key}/{spec.metrics[0]}" if data.val else None
            mixture_info = None
        ckpt_dir = home.ckpt_dir if home is not None else stage_ckpt_dir(self.run_dir, stage)
        # FSDP wraps the module in place and flattens its parameters: keep a meta-device skeleton to
        # rebuild it from full-state checkpoints (xlt.strategies).
        skeleton = meta_skeleton(module) if self.sharded else None
        if done is not None:
            log.info(
                "%s: finished in an earlier launch; loading %s",
                stage,
                done.get("best") or "its final weights",
            )
            weights = Path(done["best"]) if done.get("best") else ckpt_dir / FINAL_CKPT
            self.eval_step = int(done.get("logged_step", 0))
            if skeleton is not None:
                module = cast(TransferModule, materialize(skeleton, self._checkpoint_weights(weights)))
            else:
                self._load_weights(module, weights)
            if done.get("rng"):
                # The generators as the uninterrupted run left this stage: later stages draw the same.
                set_rng_states(rng_states_from_json(done["rng"]))
        else:
            trainer = self._trainer(stage_cfg, data, accumulate, ckpt_dir, monitor, stage=stage)
            last = ckpt_dir / LAST_CKPT
            found = resume_checkpoint(ckpt_dir) if resume else None
            resume_from = str(found) if found else None
            if resume_from:
                log.info("%s: resuming from %s", stage, resume_from)
            try:
                trainer.fit(module, datamodule=dm, ckpt_path=resume_from, weights_only=True)
            except SIGTERMException:
                raise Preempted(self._preempted_line(stage, trainer, last)) from None
            selector = trainer.checkpoint_callback
            best = selector.best_model_path if isinstance(selector, ModelCheckpoint) else ""
            if not best:
                # No selection happened (fast_dev_run or no dev set): keep the final weights.
                best = str(ckpt_dir / FINAL_CKPT)
                trainer.save_checkpoint(best, weights_only=True)
                if skeleton is not None:  # the trained module is wrapped: reload it from the file
                    module = cast(TransferModule, materialize(skeleton, self._checkpoint_weights(Path(best))))
            elif skeleton is not None:
                module = cast(TransferModule, materialize(skeleton, self._checkpoint_weights(Path(best))))
            else:
                self._load_weights(module, Path(best))
            weights = Path(best)
            # Lightning's logger axis: the fit's last step (where its own epoch-end validation landed).
            self.eval_step = max(0, logged_steps(trainer) - 1)
            stage_state.mark_stage(stage, best=best, task=spec.name, train=data.train_origin, steps=trainer.global_step,
                                   logged_step=self.eval_step, rng=rng_states_to_json(rng_states()),
                                   selection=self.settings.pop_selections(),
                                  **({"mixture": mixture_info} if mixture_info else {}))  # fmt: skip
            log_checkpoint(self.cfg, self.logger, Path(best), stage, trainer.global_step)  # logger.log_model
            release(trainer)  # nothing of the fit (module, optimizer, FSDP wrapper) outlives the stage
            del trainer, selector
            if is_global_zero():
                remove(last)  # the stage is done; its resume point is no longer needed (file or directory)
                remove(ckpt_dir / PREVIOUS_CKPT)
        self._evaluate_stage(stage, stage_cfg, spec, data, dm, module, skeleton, weights)
        del module, skeleton, dm, data
        end_of_stage_collect()

    def _stage_data(self, stage: str, stage_cfg: DictConfig, spec: TaskSpec | MixtureSpec,
                    train_spec: TaskSpec | None, test: bool, trains: bool = True) -> StageData:  # fmt: skip
        """The stage's featurised English training and dev sets (and, with ``test``, every language's
        test set); a set without data is skipped in one line."""
        if isinstance(spec, MixtureSpec):
            data = prepare_mixture_data(spec, stage_cfg, self.settings)
        else:
            languages = list(stage_cfg.get("languages") or spec.languages) if test else []
            dev_spec = select_on_spec(stage_cfg, spec, train_spec)
            data = prepare_stage_data(
                task=spec,
                train_task=train_spec,
                train_split=stage_cfg.train_split,
                dev_split=stage_cfg.dev_split or dev_spec.dev_split,
                dev_task=dev_spec,
                test_split=spec.test_split if test else None,
                languages=languages,
                settings=self.settings,
                max_len=stage_cfg.max_seq_length,
                max_train=stage_cfg.max_train_examples,
                max_eval=stage_cfg.max_eval_examples,
                val_subset=stage_cfg.get("val_subset"),
            )
        for line in data.skipped:
            self._skip(line)
        n_train = sum(map(len, data.mixture.features)) if data.mixture else len(data.train or ())
        if trains:
            log.info("%s: training %s on %s (%d examples)", stage, spec.name, data.train_origin, n_train)
        else:  # a finished stage (a relaunch, xlt.evaluate): its selected weights are scored, nothing trains
            log.info("%s: evaluating %s (trained in an earlier launch)", stage, spec.name)
        return data

    def _evaluate_stage(self, stage: str, stage_cfg: DictConfig, spec: TaskSpec | MixtureSpec, data: StageData,
                        dm: StageDataModule, module: TransferModule, skeleton: Any, weights: Path) -> None:  # fmt: skip
        """Score the selected weights on dev and test (rows, predictions); under FSDP, leave the run
        an unwrapped encoder holding them."""
        evaluator = self._trainer(stage_cfg, data, 1, None, None)
        try:
            if data.val:
                evaluator.validate(module, datamodule=dm, verbose=False)
                if evaluator.received_sigterm:  # Lightning notes SIGTERM in validate/test but may finish
                    raise SIGTERMException
            if data.test:
                if skeleton is not None and data.val:
                    # Validation wrapped the module, and FSDP cannot wrap a wrapped module again: test an
                    # unwrapped copy of the same weights, with a fresh strategy, keeping the dev scores.
                    scores = module.scores
                    module = cast(TransferModule, materialize(skeleton, self._checkpoint_weights(weights)))
                    module.scores.update(scores)
                    release(evaluator)
                    evaluator = self._trainer(stage_cfg, data, 1, None, None)
                if self.cfg.predictions:
                    module.collect_predictions()
                evaluator.test(module, datamodule=dm, verbose=False)
            if evaluator.received_sigterm:
                raise SIGTERMException
        except SIGTERMException:
            raise Preempted(f"preempted (SIGTERM) while evaluating the {stage} stage; its training is saved, "
                            "relaunch the same command to evaluate it again") from None  # fmt: skip
        release(evaluator)
        del evaluator
        if data.test and self.cfg.predictions:
            assert isinstance(spec, TaskSpec), "a mixture stage has no test sets"
            self._write_head_predictions(spec, data.test, module.predictions)
        for split, sets in (("dev", data.val), ("test", data.test)):
            if not sets:
                continue
            rows = eval_rows(stage, split, sets, module.scores, module.parts, module.selection_key)
            if self.ctx.extra["debug"]:  # n_examples: what was scored (dev too), not the set's size
                rows = scored_counts(rows, sets, module.scored)
            self.rows.extend(rows)
            self._log_rows(rows, already_logged=True)
        rank_zero_only(log.info)("%s: %s done (weights: %s)", stage, spec.name, weights)
        if skeleton is not None:
            # The evaluator wrapped this module's encoder: the probes and the next stage get an
            # unwrapped one holding the selected weights.
            state = self._checkpoint_weights(weights)
            encoder_state = None if state is None else {
                k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")
            }  # fmt: skip
            self.encoder = cast(Any, materialize(cast(TransferModule, skeleton).encoder, encoder_state))

    def _write_head_predictions(
        self, spec: TaskSpec, sets: list[EvalSet], predicted: dict[str, dict[int, Any]]
    ) -> None:
        """Write each test language's predictions in the submission layout; a language with
        unpredicted examples (e.g. limit_test_batches) is not written, and says so in one line."""
        fmt = spec.prediction_format
        for s in sets:
            by_example = predicted.get(s.key, {})
            if len(by_example) < len(s):
                self._skip(f"predictions {spec.name}/{s.split}-{s.lang}: only {len(by_example)} of {len(s)} "
                           "examples were predicted; file not written")  # fmt: skip
                continue
            ordered = [by_example[i] for i in range(len(s))]
            content: Any = ordered
            if fmt == "qa":
                content = {str(s.examples[i]["id"]): text for i, text in enumerate(ordered)}
            self._write_predictions(spec.name, s.split, s.lang, fmt, content)

    def _write_predictions(self, task: str, split: str, lang: str, fmt: str, content: Any) -> None:
        if is_global_zero():
            write_predictions(self.run_dir / PREDICTIONS_DIR, task, split, lang, fmt, content)

    def _trainer(self, stage_cfg: DictConfig, data: StageData, accumulate: int, ckpt_dir: Path | None,
                 monitor: str | None, stage: str = "") -> pl.Trainer:  # fmt: skip
        return build_trainer(self.cfg, stage_cfg, data, accumulate, logger=self.logger, run_dir=self.run_dir,
                             ckpt_dir=ckpt_dir, monitor=monitor, stage=stage, eval_step=self.eval_step)  # fmt: skip

    @property
    def sharded(self) -> bool:
        """Whether the strategy shards the module in place (FSDP), see xlt.strategies."""
        return is_sharded(self.cfg.scale.strategy)

    def _checkpoint_weights(self, path: Path) -> dict[str, torch.Tensor] | None:
        """The full state dict of a checkpoint: a file memory-mapped (the ranks of a node share the
        file's pages instead of each holding a private copy; the tensors are read, then FSDP copies
        its shard out of them), a sharded checkpoint's directory read into one full copy
        (xlt/sharded_ckpt.py). None on a lean rank, which gets rank 0's weights from FSDP."""
        if self.lean:
            return None
        return read_weights(path)

    @staticmethod
    def _load_weights(module: TransferModule, path: Path) -> None:
        """A finished stage's weights: data only (``weights_only=True`` refuses pickled code)."""
        try:
            if not path.exists():
                raise FileNotFoundError(path)
            state = {"state_dict": read_weights(path)}  # a file, or a sharded checkpoint directory
        except FileNotFoundError:
            raise CheckpointError(f"{path}: the finished stage's checkpoint is missing; delete state.json's "
                                  "stage entry or rerun with resume=false") from None  # fmt: skip
        except NoStateDict:
            state = {}
        except Exception as err:
            raise CheckpointError(f"{path}: not a loadable checkpoint ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0][:200]}); delete it and rerun with resume=false") from None  # fmt: skip
        if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
            raise CheckpointError(f"{path}: holds no state_dict (not a checkpoint of this run); delete it and rerun "
                                  "with resume=false")  # fmt: skip
        try:
            module.load_state_dict(state["state_dict"])
        except RuntimeError as err:  # other shapes or names: another model's or task's checkpoint
            detail = " ".join(line.strip() for line in str(err).splitlines()[1:3])[:300]
            raise CheckpointError(f"{path}: does not fit this run's model ({detail}); it was written by another "
                                  "configuration: delete it and rerun with resume=false") from None  # fmt: skip

    @staticmethod
    def _preempted_line(stage: str, trainer: pl.Trainer, last: Path) -> str:
        where = str(last) if last.exists() else "none yet (the stage restarts)"
        return (f"preempted (SIGTERM) during {stage} training at step {trainer.global_step}; resume point: "
                f"{where}; relaunch the same command to resume")  # fmt: skip

    def _skip(self, line: str) -> None:
        self.skipped.append(line)
        rank_zero_only(log.warning)("skipped: %s", line, extra=file_only())  # the report lists them once

    def _log_rows(self, rows: list[ResultRow], already_logged: bool = False) -> None:
        log_rows(self.logger, rows, self.eval_step, already_logged)
