"""The run directory: the name of every file a run writes there, its state (which stages are done),
the config lock a relaunch must pass, and the checkpoint a relaunch resumes from.

    <run_dir>/
        config.yaml                    the resolved config (a relaunch must match it: check_same_config)
        state.json                     RunState: finished stages, audit, pinned hub commit, intermediate key
        results.jsonl                  the result rows (xlt.results.rows), written once the run is finished
        predictions/                   XTREME submission files (predictions=true)
        checkpoints/<stage>/           best.ckpt or final.ckpt; last.ckpt/prev.ckpt while training
        csv/metrics.csv                the CSV logger's rows (xlt.loggers)
        wandb_id, wandb/               the W&B run id a relaunch continues, and wandb's own files
        train.log                      Hydra's job log (the job is xlt.train)

Light on purpose (no Lightning at import): xlt.results may read these names.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from xlt.config import ConfigError, to_container
from xlt.results.rows import ResultRow, atomic_write_text

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
STATE_FILE = "state.json"
RESULTS_FILE = "results.jsonl"
PREDICTIONS_DIR = "predictions"
CHECKPOINTS_DIR = "checkpoints"  # one folder per stage under it
BEST_CKPT = "best"  # the selected checkpoint's file stem (ModelCheckpoint adds .ckpt)
FINAL_CKPT = "final.ckpt"  # the final weights, when nothing was selected (no dev set, fast_dev_run)
LAST_CKPT = "last.ckpt"  # the resume point while a stage trains
PREVIOUS_CKPT = "prev.ckpt"  # the resume point before last.ckpt, kept while last.ckpt is rewritten
UNUSABLE_CKPT = "last.ckpt.unusable"  # an unreadable last.ckpt, set aside
WANDB_ID_FILE = "wandb_id"  # the job's W&B run id: a relaunch continues that run
CSV_DIR = "csv"  # the CSV logger's folder: metrics.csv, kept and appended to by a relaunch
METRICS_CSV = "metrics.csv"
RNG_FILE = "rng_after.pt"  # a shared intermediate stage's generator states after it (xlt/reuse.py)
TRAIN_LOG = "train.log"  # Hydra's job log, named after the job (xlt.train)


def is_global_zero() -> bool:
    """Rank 0 of a data-parallel job (Lightning sets ``rank_zero_only.rank`` in every process)."""
    from pytorch_lightning.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def stage_ckpt_dir(run_dir: Path, stage: str) -> Path:
    """Where a stage of the run keeps its checkpoints."""
    return run_dir / CHECKPOINTS_DIR / stage


@dataclass
class RunState:
    """Which stages are finished, persisted in the run directory so a relaunch resumes."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> RunState:
        return cls(path, json.loads(path.read_text()) if path.is_file() else {})

    def stage(self, name: str) -> dict[str, Any] | None:
        return self.data.get("stages", {}).get(name)

    def mark_stage(self, name: str, **info: Any) -> None:
        self.data.setdefault("stages", {})[name] = info
        self.save()

    def save(self) -> None:
        from xlt.tasks.hub import hub_reads  # every hub split read so far, with the commit it read

        if hub_reads():
            self.data.setdefault("hub_reads", {}).update(hub_reads())
        if is_global_zero():
            atomic_write_text(self.path, json.dumps(self.data, indent=1))

    def pinned_model(self, model_cfg: DictConfig) -> DictConfig:
        """``model_cfg`` with ``revision`` set to the hub commit this run first loaded, when the model
        file names none: a relaunch resumes on the same weights even if the hub moved meanwhile."""
        pinned = self.data.get("model_revision")
        from xlt.modeling.encoder import WEIGHT_SOURCES  # torch, transformers: only when pinning

        if not WEIGHT_SOURCES[model_cfg.source].hub_commit or model_cfg.revision is not None or not pinned:
            return model_cfg
        return cast(DictConfig, OmegaConf.merge(model_cfg, {"revision": pinned}))

    def pin_model(self, revision: str | None) -> None:
        """Record the hub commit the weights came from (first load only)."""
        if revision and not self.data.get("model_revision"):
            self.data["model_revision"] = revision
            self.save()


def rows_from_records(records: list[dict[str, Any]]) -> list[ResultRow]:
    return [ResultRow(r["stage"], r["task"], r["split"], r["language"], r["metric"], r["value"], r.get("n_examples"),
                      r.get("note", "")) for r in records]  # fmt: skip


# Keys a relaunch may change: they do not change a number the run reports (what is logged where, how
# fast data is read, how often a resume point is written, whether predictions are also written).
# Every other key of the resolved config must equal the stored config.yaml's.
RESULT_NEUTRAL_KEYS = (
    "logger",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "data.cache_dir",
    "data.num_workers",
    "resume",
    "predictions",
    "scale.checkpoint_every_n_steps",
    "reuse",  # where the intermediate stage is kept: it is keyed, and a relaunch keeps its folder (xlt/reuse.py)
)


def has_progress(run_dir: Path, state: RunState) -> bool:
    """Whether ``run_dir`` holds work of an earlier launch that a relaunch would reuse."""
    return bool(state.data.get("stages") or state.data.get("finished")) or any(
        (run_dir / CHECKPOINTS_DIR).glob("*/*.ckpt")
    )


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def config_differences(cfg: DictConfig, stored: dict[str, Any]) -> list[str]:
    """The result-changing keys (dotted) whose values differ between ``cfg`` and ``stored``."""
    now, before = _flatten(to_container(cfg)), _flatten(stored)

    def neutral(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in RESULT_NEUTRAL_KEYS)

    keys = sorted(k for k in now.keys() | before.keys() if not neutral(k))
    return [k for k in keys if now.get(k, "<absent>") != before.get(k, "<absent>")]


def check_same_config(cfg: DictConfig, path: Path) -> None:
    """Refuse a relaunch into a run directory whose stored config differs in a key that changes
    results (one line listing the keys): the directory belongs to the configuration that started it."""
    if not path.is_file():
        return  # a run directory from before config.yaml was kept: nothing to compare with
    stored = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert isinstance(stored, dict)
    diff = config_differences(cfg, {str(k): v for k, v in stored.items()})
    if diff:
        shown = ", ".join(diff[:12]) + (f" and {len(diff) - 12} more" if len(diff) > 12 else "")
        raise ConfigError(f"{path.parent} belongs to another configuration: {shown} differ from its {path.name} "
                          "(use another run directory, restore those values, or resume=false to start it over)")  # fmt: skip


def start_over(run_dir: Path, state: RunState) -> None:
    """Forget an earlier launch (resume=false): the stages done, their checkpoints (a later relaunch
    must not resume the old run's), its results and predictions, the W&B run id (the new run is a
    new W&B run) and the CSV rows."""
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    state.data = {}
    for name in (RESULTS_FILE, WANDB_ID_FILE, f"{CSV_DIR}/{METRICS_CSV}"):
        (run_dir / name).unlink(missing_ok=True)
    for folder in (CHECKPOINTS_DIR, PREDICTIONS_DIR):
        shutil.rmtree(run_dir / folder, ignore_errors=True)


# -- checkpoint lookup -------------------------------------------------------------------------------


class CheckpointError(RuntimeError):
    """A checkpoint the run needs cannot be used; the message names it and what to do."""


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint file (or sharded checkpoint directory), or None.
    Cheap (reads the zip directory that ``torch.save`` writes at the file's end, not the tensors): a
    truncated or empty file fails, and a directory without every file a finished save writes."""
    import zipfile

    if path.is_dir():  # a sharded (distributed) checkpoint, xlt/sharded_ckpt.py
        from xlt import sharded_ckpt

        return sharded_ckpt.problem(path) or checkpoint_problem(path / sharded_ckpt.META_FILE)
    try:
        size = path.stat().st_size
        if size == 0:
            return "it is empty (0 bytes)"
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if not any(i.filename.endswith("data.pkl") for i in infos):
                return "it holds no checkpoint (no data.pkl)"
            if any(i.header_offset + i.compress_size > size for i in infos):
                return "it is truncated"
    except (OSError, zipfile.BadZipFile) as err:
        return f"it is truncated or not a torch checkpoint ({err})"
    return None


def resume_checkpoint(ckpt_dir: Path) -> Path | None:
    """The checkpoint a relaunch resumes the stage from: ``last.ckpt``, or ``prev.ckpt`` (one save
    older) when ``last.ckpt`` is unreadable, said in one line; None when the stage has none."""
    last, prev = ckpt_dir / LAST_CKPT, ckpt_dir / PREVIOUS_CKPT
    if not last.exists():
        return prev if prev.exists() and checkpoint_problem(prev) is None else None
    problem = checkpoint_problem(last)
    if problem is None:
        return last
    if prev.exists() and checkpoint_problem(prev) is None:
        if is_global_zero():
            log.warning("%s is unusable (%s); resuming from the one before it, %s (the unusable file is kept "
                        "as %s)", last, problem, prev, UNUSABLE_CKPT)  # fmt: skip
            from xlt.sharded_ckpt import rotate

            rotate(last, last.with_name(UNUSABLE_CKPT))  # not rotated over prev.ckpt by the next save
        return prev
    raise CheckpointError(f"{last} is unusable ({problem}) and there is no earlier checkpoint to resume from; "
                          "delete it to restart the stage, or rerun with resume=false")  # fmt: skip
