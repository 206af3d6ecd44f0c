"""The intermediate phase: the intermediate stage trained in the run directory, or once per key in a
folder the jobs of a sweep share (xlt/orchestration/reuse.py) and reused by every job with that key; either way the
stage's rows and the random generators' states after it are the same as if the job trained it."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_only

from xlt.callbacks import RngStateInCheckpoint
from xlt.config import to_container
from xlt.orchestration.reuse import ROOT_NAME, IntermediateKey, SharedStage, code_version, intermediate_key
from xlt.orchestration.rundir import RNG_FILE, RunState, is_global_zero, rows_from_records
from xlt.sharded_ckpt import read_weights
from xlt.stage import StageRunner
from xlt.tasks.registry import get_mixture, get_task
from xlt.trainer import resolve_precision

log = logging.getLogger(__name__)


class IntermediatePhase(StageRunner):
    """The intermediate phase of xlt.run.Runner."""

    sweep_dir: Path | None  # a Hydra multirun's folder: shared intermediate stages live under it

    def intermediate_key(self) -> IntermediateKey:
        """What names this run's intermediate model: see xlt.orchestration.reuse.intermediate_key."""
        audit = self.state.data.get("audit", {})
        exclusions = {r["set"]: sorted(r.get("excluded_ids", [])) for r in audit.get("sets", [])
                      if r.get("stage") == "intermediate" and r.get("excluded")}  # fmt: skip
        accelerator = (
            "cuda" if torch.cuda.is_available() and self.cfg.trainer.get("accelerator") != "cpu" else "cpu"
        )
        return intermediate_key(to_container(self.cfg), model_revision=self.ctx.extra.get("model_revision", ""),
                                exclusions=exclusions, code=self.cfg.reuse.get("code") or code_version(),
                                precision=resolve_precision(self.cfg.scale.precision), accelerator=accelerator)  # fmt: skip

    def intermediate_home(self, key: IntermediateKey) -> SharedStage | None:
        """The shared folder of this run's intermediate stage, or None when the run keeps it in its
        own directory (reuse.intermediate=false, or a single run without reuse.dir). A relaunch keeps
        the folder its first launch used (state.json ``intermediate_home``), even if the key has
        changed since (a new commit): a job resumes on the intermediate model it started from."""
        pinned = self.state.data.get("intermediate_home") if self.cfg.resume else None
        if pinned:
            home = SharedStage.pinned(Path(pinned))
            if home.key.name != key.name:
                rank_zero_only(log.warning)("intermediate: keeping %s, which this job started from (its settings "
                                            "now give the key %s)", pinned, key.name)  # fmt: skip
            return home
        if not self.cfg.reuse.intermediate:
            return None
        root = self.cfg.reuse.dir or (self.sweep_dir / ROOT_NAME if self.sweep_dir is not None else None)
        return SharedStage(Path(root), key) if root is not None else None

    def run_intermediate(self, home: SharedStage | None) -> None:
        cfg = self.cfg
        mixture = get_mixture(cfg.intermediate.name)
        if mixture is not None:
            self.train_stage("intermediate", cfg.intermediate, mixture, None, test=False, home=home)
        else:
            spec = get_task(cfg.intermediate.name, role="intermediate")
            self.train_stage("intermediate", cfg.intermediate, spec, spec, test=False, home=home)

    def intermediate_phase(self) -> None:
        """Train the intermediate stage (and probe after it), or reuse it from the job that trained
        it under the same key; either way the stage's rows and the random generators' states are the
        same as if this job had trained it itself."""
        key = self.intermediate_key()
        # The key the stage was trained under: a relaunch after a code change reports that one.
        recorded = self.state.data.get("intermediate_key") if self.cfg.resume else None
        self.ctx.extra["intermediate_key"] = recorded or key.name
        if not recorded and is_global_zero():
            self.state.data["intermediate_key"] = key.name
            self.state.save()
        home = self.intermediate_home(key)
        if home is None:
            self.run_intermediate(None)
            self.probe("intermediate")
            best = (self.state.stage("intermediate") or {}).get("best", "")
            # relative to the run dir (as the folder is moved or compared), like the run's other files
            self.ctx.extra["intermediate_checkpoint"] = os.path.relpath(best, self.run_dir) if best else ""
            return
        if is_global_zero():
            self.state.data["intermediate_home"] = str(home.dir)
            self.state.save()
        timeout = self.cfg.reuse.wait_timeout_min
        with home.claim(str(self.run_dir), rank_zero=is_global_zero(),
                        timeout_s=timeout * 60 if timeout is not None else None) as record:  # fmt: skip
            if record is None:
                first_row, first_skip = len(self.rows), len(self.skipped)
                self.run_intermediate(home)
                dev_rows = self.rows[first_row:]
                self.probe("intermediate")
                probe_rows = self.rows[first_row + len(dev_rows) :]
                rng = RngStateInCheckpoint().state_dict()  # every rank (gathered when distributed)
                finished = RunState.load(home.state_path).stage("intermediate") or {}
                best = finished.get("best", "")  # written by rank 0 before the evaluation all ranks ran
                record = {"checkpoint": str(Path(best).resolve()) if best else "", "trained_by": str(self.run_dir),
                          "optimizer_steps": finished.get("steps"), "rows": [dataclasses.asdict(r) for r in dev_rows],
                          "probe_rows": [dataclasses.asdict(r) for r in probe_rows], "probe": self._probe_settings(),
                          "skipped": self.skipped[first_skip:], "hub_reads": self._intermediate_reads()}  # fmt: skip
                if is_global_zero():
                    torch.save(rng, home.dir / RNG_FILE)
                    home.finish(record)
            else:
                self.reuse_intermediate(home, record)
        self.ctx.extra.update(intermediate_key=home.key.name, intermediate_checkpoint=record["checkpoint"],
                              intermediate_trained_by=record["trained_by"])  # fmt: skip

    def _intermediate_reads(self) -> dict[str, Any]:
        """The hub reads (commits) of the intermediate stage's sets, named by the audit's origins."""
        from xlt.tasks import hub

        sets = (self.state.data.get("audit") or {}).get("sets", [])
        origins = {s.get("origin") for s in sets if s.get("stage") == "intermediate"}
        return {origin: info for origin, info in hub.hub_reads().items() if origin in origins}

    def _probe_settings(self) -> dict[str, Any]:
        return {"probe": to_container(self.cfg.probe), "retrieval": to_container(self.cfg.retrieval)}

    def reuse_intermediate(self, home: SharedStage, record: dict[str, Any]) -> None:
        """Load the encoder of a shared intermediate stage that another job trained, with its rows."""
        checkpoint = Path(record["checkpoint"])
        rank_zero_only(log.info)("intermediate: reusing %s (key %s, %s optimizer steps, trained by %s)", checkpoint,
                                 home.key.name, record.get("optimizer_steps"), record["trained_by"])  # fmt: skip
        if not self.lean:  # a lean rank (FSDP) gets rank 0's weights when FSDP wraps the encoder
            state = read_weights(checkpoint)  # a file, or a sharded checkpoint's directory
            prefix = "encoder."
            self.encoder.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
        rows = rows_from_records(record["rows"])
        self.rows.extend(rows)
        self._log_rows(rows)
        self.skipped.extend(record.get("skipped", []))
        from xlt.tasks import hub

        for origin, info in record.get("hub_reads", {}).items():  # the commits the stage was trained on
            hub.record_read(origin, **info)
        if record.get("probe") == self._probe_settings():
            probe_rows = rows_from_records(record["probe_rows"])
            self.rows.extend(probe_rows)
            self._log_rows(probe_rows)
        else:
            rank_zero_only(log.info)(
                "intermediate: probing here (the probe settings differ from the job that trained it)"
            )
            self.probe("intermediate")
        RngStateInCheckpoint().load_state_dict(torch.load(home.dir / RNG_FILE, weights_only=True))
