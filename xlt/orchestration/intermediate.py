"""The intermediate phase: the intermediate stage trained in the run directory, or once per key in a
folder the jobs of a sweep share (xlt/orchestration/reuse.py) and reused by every job with that key;
either way the stage's rows and the random generators' states after it are the same as if the job
trained it."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_only

from xlt.orchestration.plan import StagePlan
from xlt.orchestration.plan_sections import ReusePlan
from xlt.orchestration.reuse import IntermediateKey, SharedStage, code_version, intermediate_key
from xlt.orchestration.rundir import RNG_FILE, RunState, is_global_zero, rows_from_records
from xlt.orchestration.session import RunSession
from xlt.orchestration.stage import StageExecutor
from xlt.tasks import hub
from xlt.training.callbacks import RngStateInCheckpoint
from xlt.training.trainer import resolve_precision
from xlt.utils.frozen import thaw

log = logging.getLogger(__name__)


class IntermediatePhase:
    """Runs the plan's intermediate stage (and the probes after it) through ``executor``."""

    def __init__(self, session: RunSession, executor: StageExecutor, stage: StagePlan) -> None:
        self.s = session
        self.executor = executor
        self.stage = stage
        assert session.plan.reuse is not None, "a plan with an intermediate stage has a reuse plan"
        self.reuse: ReusePlan = session.plan.reuse

    def key(self) -> IntermediateKey:
        """What names this run's intermediate model: see xlt.orchestration.reuse.intermediate_key."""
        audit = self.s.state.data.get("audit", {})
        exclusions = {
            r["set"]: sorted(r.get("excluded_ids", []))
            for r in audit.get("sets", [])
            if r.get("stage") == "intermediate" and r.get("excluded")
        }
        cpu = self.s.plan.trainer.kwargs.get("accelerator") == "cpu"
        accelerator = "cuda" if torch.cuda.is_available() and not cpu else "cpu"
        return intermediate_key(
            thaw(self.s.plan.config.resolved),  # the config as planned: what the key hashes
            model_revision=self.s.ctx.extra.get("model_revision", ""),
            exclusions=exclusions,
            code=self.reuse.code or code_version(),
            precision=resolve_precision(self.s.plan.precision),
            accelerator=accelerator,
        )

    def home(self, key: IntermediateKey) -> SharedStage | None:
        """The shared folder of this run's intermediate stage, or None when the run keeps it in its
        own directory (reuse.intermediate=false, or a single run without reuse.dir). A relaunch keeps
        the folder its first launch used (state.json ``intermediate_home``), even if the key has
        changed since (a new commit): a job resumes on the intermediate model it started from."""
        pinned = self.s.state.data.get("intermediate_home") if self.s.plan.resume else None
        if pinned:
            home = SharedStage.pinned(Path(pinned))
            if home.key.name != key.name:
                rank_zero_only(log.warning)(
                    "intermediate: keeping %s, which this job started from (its settings now give the key %s)",
                    pinned,
                    key.name,
                )
            return home
        if not self.reuse.shared or self.reuse.root is None:
            return None
        return SharedStage(Path(self.reuse.root), key)

    def execute(self) -> None:
        """Train the intermediate stage (and probe after it), or reuse it from the job that trained
        it under the same key."""
        key = self.key()
        # The key the stage was trained under: a relaunch after a code change reports that one.
        recorded = self.s.state.data.get("intermediate_key") if self.s.plan.resume else None
        self.s.ctx.extra["intermediate_key"] = recorded or key.name
        if not recorded and is_global_zero():
            self.s.state.data["intermediate_key"] = key.name
            self.s.state.save()
        home = self.home(key)
        if home is None:
            self.executor.run(self.stage)
            self.executor.probe("intermediate", self.stage.probes_after)
            best = (self.s.state.stage("intermediate") or {}).get("best", "")
            # relative to the run dir (as the folder is moved or compared), like the run's other files
            self.s.ctx.extra["intermediate_checkpoint"] = (
                os.path.relpath(best, self.s.run_dir) if best else ""
            )
            return
        if is_global_zero():
            self.s.state.data["intermediate_home"] = str(home.dir)
            self.s.state.save()
        timeout = self.reuse.wait_timeout_min
        timeout_s = timeout * 60 if timeout is not None else None
        with home.claim(str(self.s.run_dir), rank_zero=is_global_zero(), timeout_s=timeout_s) as record:
            if record is None:
                record = self._train_shared(home)
            else:
                self.reuse_stage(home, record)
        self.s.ctx.extra.update(
            intermediate_key=home.key.name,
            intermediate_checkpoint=record["checkpoint"],
            intermediate_trained_by=record["trained_by"],
        )

    def _train_shared(self, home: SharedStage) -> dict[str, Any]:
        """Train the stage into its shared folder (this job holds the lock) and mark it done there."""
        rows, skipped = self.s.rows, self.s.skipped
        first_row, first_skip = len(rows), len(skipped)
        self.executor.run(self.stage, home=home)
        dev_rows = rows[first_row:]
        self.executor.probe("intermediate", self.stage.probes_after)
        probe_rows = rows[first_row + len(dev_rows) :]
        rng = RngStateInCheckpoint().state_dict()  # every rank (gathered when distributed)
        finished = RunState.load(home.state_path).stage("intermediate") or {}
        best = finished.get("best", "")  # written by rank 0 before the evaluation all ranks ran
        record = {
            "checkpoint": str(Path(best).resolve()) if best else "",
            "trained_by": str(self.s.run_dir),
            "optimizer_steps": finished.get("steps"),
            "rows": [dataclasses.asdict(r) for r in dev_rows],
            "probe_rows": [dataclasses.asdict(r) for r in probe_rows],
            "probe": self._probe_settings(),
            "skipped": skipped[first_skip:],
            "hub_reads": self._reads(),
        }
        if is_global_zero():
            torch.save(rng, home.dir / RNG_FILE)
            home.finish(record)
        return record

    def _reads(self) -> dict[str, Any]:
        """The hub reads (commits) of the intermediate stage's sets, named by the audit's origins."""
        sets = (self.s.state.data.get("audit") or {}).get("sets", [])
        origins = {s.get("origin") for s in sets if s.get("stage") == "intermediate"}
        return {origin: info for origin, info in hub.hub_reads().items() if origin in origins}

    def _probe_settings(self) -> dict[str, Any]:
        return thaw(self.reuse.probe_settings)  # type: ignore[no-any-return]

    def reuse_stage(self, home: SharedStage, record: dict[str, Any]) -> None:
        """Load the encoder of a shared intermediate stage that another job trained, with its rows."""
        checkpoint = Path(record["checkpoint"])
        rank_zero_only(log.info)(
            "intermediate: reusing %s (key %s, %s optimizer steps, trained by %s)",
            checkpoint,
            home.key.name,
            record.get("optimizer_steps"),
            record["trained_by"],
        )
        if not self.s.model.lean:  # a lean rank (FSDP) gets rank 0's weights when FSDP wraps the encoder
            self.s.model.encoder.load_state_dict(self.s.model.weights.encoder_state(checkpoint))
        self.s.add_rows(rows_from_records(record["rows"]))
        self.s.skipped.extend(record.get("skipped", []))
        for origin, info in record.get("hub_reads", {}).items():  # the commits the stage was trained on
            hub.record_read(origin, **info)
        if record.get("probe") == self._probe_settings():
            self.s.add_rows(rows_from_records(record["probe_rows"]))
        else:
            rank_zero_only(log.info)(
                "intermediate: probing here (the probe settings differ from the job that trained it)"
            )
            self.executor.probe("intermediate", self.stage.probes_after)
        RngStateInCheckpoint().load_state_dict(torch.load(home.dir / RNG_FILE, weights_only=True))
