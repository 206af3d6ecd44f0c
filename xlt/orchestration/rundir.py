"""The run directory: the name of every file a run writes there, its state (which stages are done),
the config lock a relaunch must pass, and the checkpoint a relaunch resumes from.

    <run_dir>/
        config.yaml                    the resolved config (a relaunch must match it: check_same_config)
        state.json                     RunState: finished stages, audit, pinned hub commit, intermediate key
        results.jsonl                  the result rows (xlt.results.rows), written once the run is finished
        predictions/                   XTREME submission files (predictions=true)
        checkpoints/<stage>/           best.ckpt or final.ckpt; last.ckpt/prev.ckpt while training
        csv/metrics.csv                the CSV logger's rows (xlt.training.loggers)
        wandb_id, wandb/               the W&B run id a relaunch continues, and wandb's own files
        train.log                      Hydra's job log (the job is xlt.train)
        .lock                          held (flock) by the process running in it: host, pid, start time

Light on purpose (no Lightning at import): xlt.results may read these names.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlt.results.rows import ResultRow, atomic_write_text
from xlt.tasks.hub import hub_reads  # every hub split read so far, with the commit it read
from xlt.training import sharded_ckpt

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
RNG_FILE = (
    "rng_after.pt"  # a shared intermediate stage's generator states after it (xlt/orchestration/reuse.py)
)
TRAIN_LOG = "train.log"  # Hydra's job log, named after the job (xlt.train)
LOCK_FILE = ".lock"  # the run directory's lock (run_dir_lock)
PATH_KEYS = ("best",)  # stage entries of state.json that are paths: stored relative to the state's folder


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
        """The state stored at ``path`` (empty when there is none); a file that is not a JSON object
        is a :class:`RunDirError` naming it and the line."""
        if not path.is_file():
            return cls(path, {})
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise RunDirError(f"{path}: not UTF-8 text; {_FIX_STATE}") from None
        except json.JSONDecodeError as err:
            raise RunDirError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); {_FIX_STATE}") from None
        if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
            raise RunDirError(f"{path}: expected a JSON object with a 'stages' object; {_FIX_STATE}")
        return cls(path, data)

    def stage(self, name: str) -> dict[str, Any] | None:
        """A finished stage's entry, its paths (``best``) absolute: stored relative to the state's
        folder, or absolute by an older version (then found under this folder if it was moved)."""
        info = self.data.get("stages", {}).get(name)
        if not isinstance(info, dict):
            return info
        out = dict(info)
        for key in PATH_KEYS:
            if out.get(key):
                out[key] = str(self._absolute(str(out[key])))
        return out

    def _absolute(self, recorded: str) -> Path:
        path, home = Path(recorded), self.path.parent
        if not path.is_absolute():
            return home / path
        if not path.exists() and CHECKPOINTS_DIR in path.parts:  # a run directory moved since
            index = len(path.parts) - 1 - path.parts[::-1].index(CHECKPOINTS_DIR)
            moved = home.joinpath(*path.parts[index:])
            if moved.exists():
                return moved
        return path

    def mark_stage(self, name: str, **info: Any) -> None:
        for key in PATH_KEYS:  # relative: a moved (or copied) run directory resumes
            if info.get(key):
                path, home = Path(str(info[key])).resolve(), self.path.parent.resolve()
                if path.is_relative_to(home):
                    info[key] = path.relative_to(home).as_posix()
        self.data.setdefault("stages", {})[name] = info
        self.save()

    def save(self) -> None:
        if hub_reads():
            self.data.setdefault("hub_reads", {}).update(hub_reads())
        if is_global_zero():
            atomic_write_text(self.path, json.dumps(self.data, indent=1))

    def pinned_revision(self, source: str, revision: str | None) -> str | None:
        """The hub commit this run first loaded, for a model of weight ``source`` whose file names no
        ``revision`` (else None): a relaunch resumes on the same weights even if the hub moved meanwhile."""
        pinned = self.data.get("model_revision")
        from xlt.modeling.encoder import WEIGHT_SOURCES  # torch, transformers: only when pinning

        if not WEIGHT_SOURCES[source].hub_commit or revision is not None or not pinned:
            return None
        return str(pinned)

    def pin_model(self, revision: str | None) -> None:
        """Record the hub commit the weights came from (first load only)."""
        if revision and not self.data.get("model_revision"):
            self.data["model_revision"] = revision
            self.save()


class RunDirError(ValueError):
    """A file of a run directory that cannot be used (unparsable, locked); the message is one line."""


_FIX_STATE = "restore it, or rerun with resume=false to start the run over"


def _holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``<run_dir>/.lock`` while a run works in ``run_dir``: a second process stops with a
    :class:`RunDirError` naming the holder's host and pid. The lock is an ``flock`` (released by the
    kernel when its process dies), so a lock left by a killed run is taken over; the file records
    the holder. Ranks other than global zero do not lock (rank 0 holds it for the job)."""
    if not is_global_zero():
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _holder(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                # A file system without locks: judge by the recorded holder (same host: is it alive?).
                if holder.get("pid") and (
                    holder.get("host") != socket.gethostname() or _alive(int(holder["pid"]))
                ):
                    raise _locked(run_dir, holder) from None
            else:
                raise _locked(run_dir, holder) from None
        stale = _holder(fd)
        if stale.get("pid"):
            log.info(
                "%s: taking over the lock of pid %s on %s (that process is gone)",
                run_dir,
                stale["pid"],
                stale.get("host"),
            )
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)
        yield
        os.ftruncate(fd, 0)  # released: an empty lock file names no holder
    finally:
        os.close(fd)  # drops the flock


def _locked(run_dir: Path, holder: dict[str, Any]) -> RunDirError:
    who = (
        f"pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('since')}"
        if holder.get("pid")
        else "a process that has not written its name yet"
    )
    return RunDirError(
        f"{run_dir} is in use by another run ({who}); wait for it to end, or use another "
        "run directory (hydra.run.dir=...)"
    )


def rows_from_records(records: list[dict[str, Any]]) -> list[ResultRow]:
    return [
        ResultRow(
            r["stage"],
            r["task"],
            r["split"],
            r["language"],
            r["metric"],
            r["value"],
            r.get("n_examples"),
            r.get("note", ""),
        )
        for r in records
    ]


def has_progress(run_dir: Path, state: RunState) -> bool:
    """Whether ``run_dir`` holds work of an earlier launch that a relaunch would reuse."""
    return bool(state.data.get("stages") or state.data.get("finished")) or any(
        (run_dir / CHECKPOINTS_DIR).glob("*/*.ckpt")
    )


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

    if path.is_dir():  # a sharded (distributed) checkpoint, xlt/training/sharded_ckpt.py
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
            log.warning(
                "%s is unusable (%s); resuming from the one before it, %s (the unusable file is kept as %s)",
                last,
                problem,
                prev,
                UNUSABLE_CKPT,
            )
            # not rotated over prev.ckpt by the next save
            sharded_ckpt.rotate(last, last.with_name(UNUSABLE_CKPT))
        return prev
    raise CheckpointError(
        f"{last} is unusable ({problem}) and there is no earlier checkpoint to resume from; "
        "delete it to restart the stage, or rerun with resume=false"
    )
