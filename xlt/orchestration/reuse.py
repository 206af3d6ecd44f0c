"""The intermediate model, trained once per key and reused by every target job with that key.

X-STILTs trains each intermediate model once and fine-tunes it on every target. A job of a sweep is
(model, intermediate, target, seed); the jobs that differ only in their target share one
intermediate stage, which lives outside their run directories:

    <root>/<key name>/                 root: <sweep dir>/intermediate in a Hydra multirun, or reuse.dir
        key.json                       what the key hashes (readable: why two keys differ)
        stage.json                     the stage's state (RunState: the finished stage, its RNG state)
        checkpoints/intermediate/      best.ckpt (or final.ckpt), and last.ckpt/prev.ckpt while training
        owner.json                     the job that holds (or last held) the lock: launch, run dir, host, pid
        done.json                      written last (atomically): the stage is complete; its rows (dev
                                       scores, probes after the stage), the RNG state after it, the
                                       checkpoint, who trained it, how many optimizer steps
        lock                           the lock file

The key (:func:`intermediate_key`) hashes everything that changes the intermediate weights: the
model section (with the hub commit the weights came from), the intermediate stage's config, the
seed, the code version (commit, plus a hash of the uncommitted diff), the scale settings that change
numerics (precision as resolved on this machine, strategy, devices, per-device batch, peft/LoRA,
activation checkpointing), optimiser and Trainer settings, the data source, the contamination
audit's exclusions that apply to the intermediate sets, and the accelerator kind.

Concurrency: global rank 0 of a job takes an exclusive POSIX record lock (``fcntl.lockf``) on
``lock``; the holder trains the stage (or resumes it from ``last.ckpt`` after an earlier holder was
killed: a lock dies with its process), writes ``done.json`` and releases. A job that finds the lock
held waits, saying which job holds it, and reuses the result once ``done.json`` appears. The other
ranks of a job never touch the lock: they wait for ``done.json`` (reuse) or for ``owner.json`` to
name their own launch (:func:`launch_id`: train with their rank 0). See docs/sweeps.md for why a
lock (and not a two-phase sweep or SLURM dependencies) and the filesystems it relies on.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlt import PROJECT_ROOT
from xlt.orchestration.config_lock import is_result_neutral
from xlt.schema import MOVED_TARGETS

log = logging.getLogger(__name__)

ROOT_NAME = "intermediate"  # <sweep dir>/intermediate/<key>
KEY_FILE = "key.json"
SHARED_STATE_FILE = "stage.json"  # the shared stage's RunState (a run directory's is rundir.STATE_FILE)
DONE_FILE = "done.json"
OWNER_FILE = "owner.json"
LOCK_FILE = "lock"
LAUNCH_ENV = "XLT_LAUNCH_ID"

# Target-only options (xlt/evaluation/analysis_dev.py): meaningless to an intermediate stage, left out of
# its key so that a stage trained before they existed keeps its key under a fixed reuse.code.
_STAGE_TARGET_ONLY = ("eval_dev_heldout", "eval_dev_languages")
# A class that moved (xlt.schema.MOVED_TARGETS) is keyed by its old path: a fixed reuse.code keeps its keys.
_MOVED_BACK = {new: old for old, new in MOVED_TARGETS.items()}


class ReuseError(RuntimeError):
    """The shared intermediate stage cannot be used; the message names the folder and what to do."""


def code_version(diff_hash: bool = True) -> str:
    """The project's commit (the one git helper: result rows' ``git_commit`` and the reuse key's
    code), plus ``-dirty`` when tracked files have changes: ``-dirty-<hash of git diff HEAD>`` with
    ``diff_hash`` (two different uncommitted states must not share a key); ``unknown`` outside git."""
    try:
        git = ["git", "-C", str(PROJECT_ROOT)]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        diff = subprocess.run([*git, "diff", "HEAD", "--no-color"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    if not diff.strip():
        return commit.stdout.strip()
    return commit.stdout.strip() + (
        f"-dirty-{hashlib.sha256(diff).hexdigest()[:12]}" if diff_hash else "-dirty"
    )


@dataclass(frozen=True)
class IntermediateKey:
    name: str  # <model>-<intermediate>-s<seed>-<12 hex digits>: the folder name
    digest: str  # the full sha256 of the material
    material: dict[str, Any]


def _without(name: str, section: dict[str, Any] | None) -> dict[str, Any]:
    """A config section without its result-neutral keys (config_lock.RESULT_NEUTRAL_KEYS)."""
    return {k: v for k, v in (section or {}).items() if not is_result_neutral(f"{name}.{k}")}


def intermediate_key(
    config: dict[str, Any],
    *,
    model_revision: str,
    exclusions: dict[str, Any],
    code: str,
    precision: str,
    accelerator: str,
) -> IntermediateKey:
    """The key of the intermediate stage of the resolved config ``config`` (a plain dict: the plan's
    ConfigRecord.resolved, xlt/orchestration/plan_sections.py).

    ``model_revision``: the hub commit the weights came from ("" when not from the hub);
    ``exclusions``: the audit's removals from the intermediate stage's sets (set name -> excluded
    ids); ``code``: :func:`code_version`; ``precision``: as resolved on this machine
    (``scale.precision=auto`` is bf16 on one GPU and fp32 on a CPU); ``accelerator``: cpu or cuda."""
    stage = config.get("intermediate")
    if not stage:
        raise ValueError("no intermediate stage: nothing to key")
    model = dict(config["model"])
    model["revision"] = model_revision or model.get("revision")
    scale = _without("scale", config.get("scale"))
    scale["precision"] = precision
    strategy = scale.get("strategy")
    if (
        isinstance(strategy, dict) and strategy.get("_target_") in _MOVED_BACK
    ):  # keys computed before the move
        scale["strategy"] = {**strategy, "_target_": _MOVED_BACK[strategy["_target_"]]}
    material = {
        "model": model,
        "intermediate": {k: v for k, v in stage.items() if k not in _STAGE_TARGET_ONLY},
        "seed": config["seed"],
        "code": code,
        "scale": scale,
        "optim": config.get("optim"),
        "trainer": _without("trainer", config.get("trainer")),
        "data": _without("data", config.get("data")),
        "exclusions": exclusions,
        "accelerator": accelerator,
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
    safe = "".join(
        c if c.isalnum() or c in "._-" else "_" for c in f"{model.get('name')}-{stage.get('name')}"
    )
    return IntermediateKey(f"{safe}-s{config['seed']}-{digest[:12]}", digest, material)


def launch_id() -> str:
    """An id shared by the ranks of one launch of a job, and new at each relaunch: SLURM's job id and
    restart count (a requeued job is a new launch), torchrun's run id, or one made here and put in the
    environment, which the ranks Lightning starts as subprocesses inherit."""
    found = os.environ.get(LAUNCH_ENV)
    if found:
        return found
    if os.environ.get("SLURM_JOB_ID"):
        found = f"slurm-{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    elif os.environ.get("TORCHELASTIC_RUN_ID"):
        found = f"torchrun-{os.environ['TORCHELASTIC_RUN_ID']}"
    else:
        found = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.environ[LAUNCH_ENV] = found
    return found


def _atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ReuseError(
            f"{path}: unreadable ({err}); delete {path.parent} to train that intermediate stage again"
        ) from None
    return data if isinstance(data, dict) else None


class SharedStage:
    """One key's folder: the lock, the stage's state and checkpoints, and its completion record."""

    def __init__(self, root: Path, key: IntermediateKey) -> None:
        self.key = key
        self.dir = Path(root) / key.name
        self.ckpt_dir = self.dir / "checkpoints" / "intermediate"
        self.state_path = self.dir / SHARED_STATE_FILE

    @classmethod
    def pinned(cls, folder: Path) -> SharedStage:
        """The stage in ``folder`` (a run's recorded ``intermediate_home``), with the key stored there."""
        stored = _read_json(folder / KEY_FILE)
        if stored is None:
            raise ReuseError(
                f"{folder}: the shared intermediate stage this job started from is gone (no {KEY_FILE}); "
                "rerun with resume=false to start the job over"
            )
        return cls(
            folder.parent, IntermediateKey(folder.name, str(stored.get("digest")), stored.get("material", {}))
        )

    def done(self) -> dict[str, Any] | None:
        """The completion record, or None while the stage is not complete."""
        record = _read_json(self.dir / DONE_FILE)
        if record is None:
            return None
        checkpoint = Path(record.get("checkpoint", ""))
        if not checkpoint.exists():  # a file, or a sharded checkpoint's directory
            raise ReuseError(
                f"{self.dir / DONE_FILE} names the checkpoint {checkpoint}, which is missing; delete "
                f"{self.dir} to train that intermediate stage again"
            )
        return record

    def owner(self) -> dict[str, Any]:
        return _read_json(self.dir / OWNER_FILE) or {}

    def _check_key(self) -> None:
        stored = _read_json(self.dir / KEY_FILE)
        if stored is None:
            _atomic_write_json(
                self.dir / KEY_FILE, {"digest": self.key.digest, "material": self.key.material}
            )
        elif stored.get("digest") != self.key.digest:
            raise ReuseError(
                f"{self.dir / KEY_FILE} holds another key ({str(stored.get('digest'))[:16]}..., this job's "
                f"is {self.key.digest[:16]}...); move that folder away"
            )

    def finish(self, record: dict[str, Any]) -> None:
        """Mark the stage complete (rank 0, while holding the lock): ``done.json``, atomically."""
        if (self.dir / DONE_FILE).exists():
            # Only one holder at a time can get here; a second completion means the lock did not
            # exclude another process (a filesystem without working POSIX locks across nodes).
            raise ReuseError(
                f"{self.dir / DONE_FILE} appeared while this job held the lock: POSIX locks do not "
                f"work across the machines sharing {self.dir.parent} (see docs/sweeps.md, reuse)"
            )
        _atomic_write_json(self.dir / DONE_FILE, {**record, "key": self.key.name, "finished_at": time.time()})

    @contextlib.contextmanager
    def claim(
        self,
        who: str,
        *,
        rank_zero: bool = True,
        timeout_s: float | None = None,
        poll_s: float = 2.0,
        say_every_s: float = 300.0,
    ) -> Iterator[dict[str, Any] | None]:
        """Yield the completion record when the stage is complete (reuse it), or None when this job
        must train it, holding the lock until the block ends.

        Rank 0 waits for the lock, saying who holds it (at once, then every ``say_every_s``); a
        record that appears meanwhile ends the wait. Other ranks wait for the record or for
        ``owner.json`` to name this launch. ``timeout_s`` (None: no limit) ends the wait with a
        :class:`ReuseError` naming the holder."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not rank_zero:
            yield self._follow(timeout_s, poll_s)
            return
        record = self.done()
        if record is not None:
            yield record
            return
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o664)
        try:
            record = self._lock(fd, timeout_s, poll_s, say_every_s)
            if record is None:
                record = self.done()  # completed by the holder before us
            if record is not None:
                yield record
                return
            self._check_key()
            _atomic_write_json(
                self.dir / OWNER_FILE,
                {
                    "launch": launch_id(),
                    "run_dir": who,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "since": time.time(),
                },
            )
            yield None
        finally:
            os.close(fd)  # releases the lock (POSIX locks are the process's: this is its only descriptor)

    def _lock(
        self, fd: int, timeout_s: float | None, poll_s: float, say_every_s: float
    ) -> dict[str, Any] | None:
        """Take the lock (return None), or return the completion record if it appears first."""
        start = time.monotonic()
        said = -float("inf")  # say it at once, then every say_every_s
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return None
            except OSError as err:
                if err.errno not in (errno.EACCES, errno.EAGAIN):
                    raise ReuseError(
                        f"{self.dir / LOCK_FILE}: cannot lock it ({err}); the filesystem of "
                        f"{self.dir.parent} must support POSIX locks (see docs/sweeps.md, reuse)"
                    ) from None
            record = self.done()
            if record is not None:
                return record
            waited = time.monotonic() - start
            if timeout_s is not None and waited > timeout_s:
                raise ReuseError(
                    f"gave up after {waited:.0f} s waiting for {self.describe_owner()} to train "
                    f"{self.dir} (reuse.wait_timeout_min)"
                )
            if waited - said >= say_every_s:
                log.warning(
                    "intermediate stage %s is being trained by %s; waiting for it (lock %s, waited %.0f s)",
                    self.key.name,
                    self.describe_owner(),
                    self.dir / LOCK_FILE,
                    waited,
                )
                said = waited
            time.sleep(poll_s)

    def _follow(self, timeout_s: float | None, poll_s: float) -> dict[str, Any] | None:
        """A rank other than 0: the record (reuse), or None once this launch's rank 0 owns the stage."""
        start, mine = time.monotonic(), launch_id()
        while True:
            record = self.done()
            if record is not None:
                return record
            if self.owner().get("launch") == mine:
                return None
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                raise ReuseError(f"gave up waiting for rank 0 to claim {self.dir} (reuse.wait_timeout_min)")
            time.sleep(poll_s)

    def describe_owner(self) -> str:
        owner = self.owner()
        if not owner:
            return "another job (no owner.json yet)"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("since", 0)))
        return f"the job in {owner.get('run_dir')} (host {owner.get('host')}, pid {owner.get('pid')}, since {since})"
