"""Fault injection for the kill-and-relaunch tests (tests/test_resume.py), loaded only when a test
puts this folder first on PYTHONPATH: Python imports ``sitecustomize`` at start-up.

``XLT_FAULT=<task>:<hook>:<n>:<signal>`` sends ``signal`` (TERM or KILL) to this process at the
``n``-th call (counted from 0 in this process) of ``TransferModule.<hook>_step`` for ``task``
(``train``: at the training step whose ``global_step`` is ``n``, i.e. before that step's update;
``validation``/``test``: the n-th evaluation batch). It fires once: ``XLT_FAULT_MARK`` names a file
created just before the signal, and an existing file disables the fault (the relaunch).

More hooks and signals for the multi-rank SIGTERM tests (tests/test_sigterm_ranks.py): ``save`` fires
in ``TransferModule.on_save_checkpoint`` (every rank builds the checkpoint, rank 0 then writes it and
all meet in a barrier), ``write`` in Lightning's ``_atomic_save`` (rank 0 writing the file while the
others already wait in the barrier after the save; ``task`` is the file name, e.g. ``last.ckpt``),
``shardwrite`` in Lightning's ``_distributed_checkpoint_save`` (a sharded checkpoint: every rank
writing its shards into the directory ``task``, e.g. ``last.ckpt``),
``embed`` in ``xlt.modeling.embedding.embed`` (retrieval: a probe between
stages; ``task`` is then the progress label's first word, e.g. ``tatoeba``), ``place`` in
``xlt.training.callbacks.put_in_place`` (rank 0 renaming a finished sharded ``best.ckpt`` into place; ``task``
is the destination's name, e.g. ``best.ckpt``); ``n`` counts the calls of this process. Signal ``TERMGROUP``
sends SIGTERM to the whole process group (every rank, as SLURM signals every task of a job step),
``TERM`` to this process only, ``SLEEP<seconds>`` sends nothing and sleeps that long (a slow file
system, to widen a race between ranks).

``XLT_FAULT_EXITS`` names a folder where every process writes, at exit, ``<pid>`` holding its rank
and the status it passed to ``sys.exit`` (0 when it returned normally). A process ended by
``os._exit`` (the SIGTERM watchdog) or a signal writes nothing: the test sees the missing rank.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import signal
import sys
from pathlib import Path
from typing import Any

SPEC = os.environ.get("XLT_FAULT", "")
MARK = os.environ.get("XLT_FAULT_MARK", "")
EXITS = os.environ.get("XLT_FAULT_EXITS", "")
JOB = os.environ.get("XLT_FAULT_JOB", "")


def _in_job() -> bool:
    """``XLT_FAULT_JOB`` (a Hydra job's folder name, e.g. a multirun job's): count calls in that job
    only (benchmarks/rehearsal.py: one job of a sweep whose process runs many)."""
    if not JOB:
        return True
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and Path(HydraConfig.get().runtime.output_dir).name == JOB


def _record_exits(folder: Path) -> None:
    import atexit

    status = {"code": 0}
    original_exit = sys.exit

    def exit_(code: Any = None) -> None:
        status["code"] = code if isinstance(code, int) else (0 if code is None else 1)
        original_exit(code)

    def write() -> None:
        rank = os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))
        (folder / str(os.getpid())).write_text(f"{rank} {status['code']}")

    sys.exit = exit_  # type: ignore[assignment]
    atexit.register(write)


def _fire() -> None:
    mark = Path(MARK)
    if mark.exists():
        return
    mark.write_text(SPEC)
    how = SPEC.split(":")[3]
    print(f"[fault] {SPEC} (pid {os.getpid()})", file=sys.stderr, flush=True)
    if how.startswith("SLEEP"):
        import time

        time.sleep(float(how.removeprefix("SLEEP")))
        return
    if how == "TERMGROUP":
        os.killpg(os.getpgid(0), signal.SIGTERM)
        return
    sig = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL}[how]
    os.kill(os.getpid(), sig)


def _patch_counted(module: Any, name: str, task: str, target: int, label: Any) -> None:
    """Fire at the ``target``-th call of ``module.name`` (a class attribute when ``label`` takes self)."""
    owner = module.TransferModule if name == "on_save_checkpoint" else module
    original = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if label(args, kwargs) == task and _in_job():
            index = calls["n"]
            calls["n"] += 1
            if index == target:
                _fire()
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def _patch(module: Any) -> None:
    task, hook, n, _ = SPEC.split(":")
    target = int(n)
    if hook == "write":
        _patch_counted(module, "_atomic_save", task, target, lambda a, k: Path(str(a[1])).name)
        return
    if hook == "shardwrite":
        _patch_counted(
            module, "_distributed_checkpoint_save", task, target, lambda a, k: Path(str(a[1])).name
        )
        return
    if hook == "save":
        _patch_counted(module, "on_save_checkpoint", task, target, lambda a, k: a[0].task)
        return
    if hook == "embed":
        _patch_counted(module, "embed", task, target, lambda a, k: str(k.get("desc", "")).split(" ")[0])
        return
    if hook == "place":
        _patch_counted(module, "put_in_place", task, target, lambda a, k: Path(str(a[1])).name)
        return
    cls = module.TransferModule
    original = getattr(cls, f"{hook}_step")
    calls = {"n": 0}

    def step(self: Any, batch: Any, batch_idx: int, *args: Any, **kwargs: Any) -> Any:
        if self.task == task and _in_job():
            index = self.trainer.global_step if hook == "training" else calls["n"]
            calls["n"] += 1
            if index == target:
                _fire()
        return original(self, batch, batch_idx, *args, **kwargs)

    setattr(cls, f"{hook}_step", step)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        hook = SPEC.split(":")[1]
        wanted = {"embed": "xlt.modeling.embedding", "write": "lightning_fabric.utilities.cloud_io",
                  "shardwrite": "lightning_fabric.strategies.fsdp",
                  "place": "xlt.training.callbacks"}.get(hook, "xlt.modeling.module")  # fmt: skip
        if name != wanted:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def patched(module: Any) -> None:
            exec_module(module)
            _patch(module)

        loader.exec_module = patched  # type: ignore[method-assign]
        return spec


if SPEC and MARK:
    sys.meta_path.insert(0, _Finder())
if EXITS:
    _record_exits(Path(EXITS))
