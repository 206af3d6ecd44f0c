"""SIGTERM on one or several ranks: every rank ends within a bounded time with status 143, at any
point of the run (training, validation, a checkpoint save, between stages), and the relaunch resumes.

Lightning 2.6.6's own SIGTERM handler (``_SignalConnector._sigterm_notifier_fn``) does not only set a
flag: it forwards the signal to the processes its launcher started, then runs
``torch.distributed.broadcast`` *inside the signal handler*, i.e. a collective at whatever line each
rank happened to be on. The other rank is then in another collective (the barrier after a checkpoint
save, an FSDP all-gather, the per-batch broadcast of the flag), the two never match, and the job
hangs (seen: rank 0 in that broadcast, rank 1 in the barrier after ``save_checkpoint``, 15 minutes).

What xlt does instead (:func:`handling_sigterm`, around the whole run):

- a Python SIGTERM handler that only acts where that is safe. While a Trainer runs it sets this
  rank's own (local) flag and nothing else; the Trainer's ``received_sigterm``, which every stop check
  of Lightning's loops and of xlt.orchestration.stage reads, is the *shared* decision: one ``all_reduce(MAX)`` of
  the local flags at every training, validation and test batch start (:class:`SharedSigterm`; every
  rank reaches those together), so all ranks stop at the same check (``SIGTERMException``, which
  xlt.orchestration.stage turns into :class:`xlt.training.callbacks.Preempted`, exit 143). Lightning's per-batch
  ``_broadcast_sigterm_tensor`` (which swallowed a failed broadcast) becomes a plain read of that
  decision. Outside a Trainer (data preparation, retrieval, between stages) the handler raises
  Preempted at once. Only the first SIGTERM acts: a second one while the first unwinds does nothing;
- Lightning's handler is not installed (:class:`SignalConnector` replaces the Trainer's connector),
  and the first SIGTERM switches off Lightning's child-process observer (it SIGKILLs rank 0 within
  5 s of a child rank exiting non-zero, and every rank now exits 143 on purpose);
- a watchdog thread that learns of the signal even when the main thread is blocked in C (a
  collective waiting for a rank that has left): ``signal.set_wakeup_fd`` writes the signal number to
  a socket as soon as it arrives. The thread forwards SIGTERM to the ranks Lightning's local launcher
  started (they run the same code), and if the process is still alive ``grace`` seconds later
  (``XLT_SIGTERM_GRACE_S``, default 20) it flushes the logs (unless a log lock stays held) and ends it
  with ``os._exit(143)``. Once a SIGTERM came it stays armed after the block, while the process unwinds.

The grace must stay below SLURM's ``KillWait`` (30 s by default; SIGKILL follows SIGTERM after it),
hence the default of 20 s: raise ``KillWait`` with it where more is needed.

A rank ended in the middle of writing last.ckpt (by the watchdog or SIGKILL): Lightning's
``_atomic_save`` serialises the checkpoint into memory, writes it to a temporary file made by
``tempfile.mkstemp`` in ``$TMPDIR`` (fsspec's local transaction) and then moves it over last.ckpt;
xlt has renamed the previous last.ckpt to prev.ckpt just before (xlt.training.callbacks.keep_previous). A
kill during the write leaves no last.ckpt and an orphaned temporary file in ``$TMPDIR``; the relaunch
resumes from prev.ckpt, the resume point before it (xlt.orchestration.rundir.resume_checkpoint). Put ``$TMPDIR`` on
the checkpoints' file system with room for one checkpoint: on another file system the move is a copy,
which a kill can cut short, leaving a truncated last.ckpt (set aside as unreadable by the relaunch).
See docs/slurm-requeue.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException

from xlt.training.callbacks import Preempted
from xlt.training.lightning_adapter import (
    LightningSignalConnector,
    set_signal_connector,
    set_sigterm_check,
    signal_connector,
)

log = logging.getLogger(__name__)

EXIT_STATUS = 143  # 128 + SIGTERM, as a shell reports a process ended by it
DEFAULT_GRACE_S = 20.0  # below SLURM's default KillWait (30 s), after which SIGKILL comes


class _State:
    connector: weakref.ReferenceType[SignalConnector] | None = None  # the running Trainer's, if any
    children: list[Any] = []  # processes Lightning's local launcher started (subprocess.Popen)
    received_at: float | None = None  # this rank's own (local) flag: when its first SIGTERM came
    handled = False  # the handler acted on a first SIGTERM (raised Preempted or left it to the Trainer)
    installed = False

    def reset(self) -> None:
        self.connector, self.children, self.received_at, self.handled = None, [], None, False


STATE = _State()


class SignalConnector(LightningSignalConnector):
    """The Trainer's signal connector without Lightning's SIGTERM handler (see the module docstring):
    while its Trainer runs, xlt's process-wide handler sets ``received_sigterm`` here. Lightning's
    SLURM requeue handler is not installed either (xlt runs SLURMEnvironment(auto_requeue=False))."""

    _shared = False

    @property  # type: ignore[override]
    def received_sigterm(self) -> bool:
        """The stop decision every rank shares (the all_reduce of :meth:`sync`), never this rank's own
        flag: Lightning's loops and xlt.orchestration.stage read it at their checks, and a rank that stopped alone
        would leave the others in the next collective. One process: its own flag, at once."""
        if getattr(self.trainer, "world_size", 1) == 1:
            return STATE.received_at is not None
        return self._shared

    @received_sigterm.setter
    def received_sigterm(self, value: bool) -> None:
        self._shared = bool(value)

    def sync(self) -> None:
        """One all_reduce(MAX) of every rank's local flag, at a point every rank reaches together."""
        local = STATE.received_at is not None
        strategy = self.trainer.strategy
        if dist.is_available() and dist.is_initialized() and self.trainer.world_size > 1:
            flag = torch.tensor([1 if local else 0], device=strategy.root_device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self._shared = bool(flag.item())
        else:
            self._shared = local

    def register_signal_handlers(self) -> None:
        self._shared = False  # the first sync decides, on every rank alike
        STATE.connector = weakref.ref(self)
        launcher = getattr(self.trainer.strategy, "launcher", None)
        for proc in getattr(launcher, "procs", None) or []:
            if proc not in STATE.children:
                STATE.children.append(proc)

    def teardown(self) -> None:
        if STATE.connector is not None and STATE.connector() is self:
            STATE.connector = None


class SharedSigterm(Callback):
    """Updates the shared stop decision at every batch start (training, validation, test): every
    rank reaches those together, so one all_reduce there cannot pair with another collective."""

    def _sync(self, trainer: Any) -> None:
        connector = signal_connector(trainer)
        if isinstance(connector, SignalConnector):
            connector.sync()

    def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
        self._sync(trainer)

    def on_validation_batch_start(self, trainer: Any, *args: Any) -> None:
        self._sync(trainer)

    def on_test_batch_start(self, trainer: Any, *args: Any) -> None:
        self._sync(trainer)


def use_xlt_signals(trainer: Any) -> None:
    """Give ``trainer`` the connector above and the callback that shares the stop decision (before
    fit/validate/test). Lightning's per-batch ``_broadcast_sigterm_tensor`` (which swallows a failed
    broadcast and then reads 0) becomes a plain check of the shared decision: no collective, and a
    failure is not hidden."""
    set_signal_connector(trainer, SignalConnector(trainer))
    trainer.callbacks.append(SharedSigterm())

    def check_shared_decision() -> None:
        if trainer.received_sigterm:
            raise SIGTERMException()

    set_sigterm_check(trainer, check_shared_decision)


def _on_sigterm(signum: int, frame: Any) -> None:
    _note()
    connector = STATE.connector() if STATE.connector is not None else None
    if STATE.handled:
        return  # a second SIGTERM while the first unwinds (or its Trainer stops): nothing more
    STATE.handled = True
    if connector is not None:
        return  # a Trainer runs: its next batch start shares the decision (SharedSigterm)
    raise Preempted(
        "preempted (SIGTERM) outside training (data, retrieval or between stages); "
        "relaunch the same command to resume"
    )


def _note() -> None:
    if STATE.received_at is None:
        STATE.received_at = time.monotonic()
        disable_child_observer()


def disable_child_observer() -> None:
    """Stop Lightning's child-process observer (lightning_fabric's subprocess_script launcher): it
    SIGKILLs rank 0 within 5 s of a child rank exiting non-zero, and after SIGTERM every rank exits
    with 143 on purpose; rank 0 must be left to end on its own (and with its own status)."""
    for thread in threading.enumerate():
        if thread.name == "child-process-observer":
            thread._finished = True  # type: ignore[attr-defined]
            thread._run = lambda: True  # type: ignore[attr-defined]  # it may be mid-sleep: no last check


def _forward_to_children() -> None:
    for proc in STATE.children:
        with contextlib.suppress(Exception):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)


def _watchdog(reader: socket.socket, grace: float, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            data = reader.recv(64)
        except (BlockingIOError, InterruptedError, TimeoutError):
            continue
        except OSError:
            return
        if not data:
            return
        if signal.SIGTERM not in data:
            continue
        _note()
        _forward_to_children()
        deadline = time.monotonic() + grace
        while not stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.2)
        if stop.is_set():
            return
        rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", os.environ.get("LOCAL_RANK", "0")))
        print(
            f"xlt: rank {rank}: still running {grace:.0f} s after SIGTERM (waiting for another rank); "
            f"exiting with status {EXIT_STATUS}",
            file=sys.stderr,
            flush=True,
        )
        for handler in logging.getLogger().handlers:
            _flush_unless_held(handler)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(EXIT_STATUS)


def _flush_unless_held(handler: logging.Handler, timeout: float = 1.0) -> None:
    """Flush ``handler`` unless its lock stays held (the main thread may be stuck inside an emit):
    the watchdog must exit, not wait on that lock."""
    lock = handler.lock
    if lock is not None and not lock.acquire(timeout=timeout):
        return
    try:
        with contextlib.suppress(Exception):
            handler.flush()
    finally:
        if lock is not None:
            lock.release()


@contextlib.contextmanager
def handling_sigterm(grace: float | None = None) -> Iterator[None]:
    """SIGTERM as described in the module docstring, for the duration of the block (the run); the
    previous handler and wakeup fd are restored after it. Nothing outside the main thread."""
    if threading.current_thread() is not threading.main_thread() or STATE.installed:
        yield
        return
    if grace is None:
        grace = float(os.environ.get("XLT_SIGTERM_GRACE_S", DEFAULT_GRACE_S))
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    reader.settimeout(0.5)
    stop = threading.Event()
    STATE.reset()  # before the handler and the thread: a signal at once must not be wiped out
    STATE.installed = True
    previous_handler = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    thread = threading.Thread(target=_watchdog, args=(reader, grace, stop), name="xlt-sigterm", daemon=True)
    thread.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGTERM, previous_handler)
        if STATE.received_at is None:
            stop.set()
            thread.join(timeout=5)
            reader.close()
            writer.close()
        # else: the watchdog stays armed (the grace still bounds the exit while the process unwinds)
        STATE.installed, STATE.connector = False, None
