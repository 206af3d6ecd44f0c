"""The SIGTERM watchdog (xlt/training/preemption.py) with real processes and real signals: a rank blocked in a
collective that its peer never joins (the main thread is in C, so no Python handler can run) still
ends within the grace time with status 143; a rank outside any Trainer ends at once with 143."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from xlt import PROJECT_ROOT

SCRIPT = """
import sys, time
import torch.distributed as dist
from xlt.training.preemption import handling_sigterm

rank, port = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
with handling_sigterm(grace=2.0):
    print("ready", flush=True)
    if rank == 0:
        dist.barrier()  # rank 1 never comes
    else:
        time.sleep(600)
"""


def test_a_rank_blocked_in_a_collective_ends_with_143_within_the_grace_time(tmp_path: Path) -> None:
    script = tmp_path / "blocked.py"
    script.write_text(SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), port], env=env, cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]  # fmt: skip
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # rank 0 is inside the barrier
        sent = time.monotonic()
        procs[0].send_signal(signal.SIGTERM)
        _, err0 = procs[0].communicate(timeout=30)
        waited = time.monotonic() - sent
        assert procs[0].returncode == 143, err0
        assert 2.0 <= waited < 10.0, waited
        assert "still running 2 s after SIGTERM" in err0
        procs[1].send_signal(signal.SIGTERM)  # in Python (sleeping), outside any Trainer: at once
        _, err1 = procs[1].communicate(timeout=30)
        assert procs[1].returncode == 143, err1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}


SHARED = """
import os, signal, sys, time
from types import SimpleNamespace
import torch
import torch.distributed as dist
from xlt.training.preemption import SignalConnector, handling_sigterm

rank, port = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
with handling_sigterm(grace=30.0):
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), world_size=2)
    connector = SignalConnector(trainer)
    connector.register_signal_handlers()
    if rank == 0:
        os.kill(os.getpid(), signal.SIGTERM)  # only rank 0 is told
        time.sleep(0.3)
    before = connector.received_sigterm
    connector.sync()  # what SharedSigterm does at every batch start
    print(f"{before} {connector.received_sigterm}", flush=True)
    dist.barrier()
os._exit(0)
"""


def test_the_stop_decision_is_shared_by_every_rank_not_each_ranks_own_flag(tmp_path: Path) -> None:
    """Lightning's stop checks read ``received_sigterm``: before the shared all_reduce no rank sees
    rank 0's own SIGTERM, after it every rank does (a rank stopping alone strands the others)."""
    script = tmp_path / "shared.py"
    script.write_text(SHARED)
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), port], env=_env(), cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]  # fmt: skip
    try:
        outs = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
        assert out.split() == ["False", "True"], (out, err)


ARMED = """
import os, signal, sys, time
from xlt.training.callbacks import Preempted
from xlt.training.preemption import handling_sigterm

with handling_sigterm(grace=2.0):
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    except Preempted:
        os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM while the first unwinds
        time.sleep(0.3)
        print("second SIGTERM did not raise", flush=True)
print("after the block", flush=True)
time.sleep(60)  # e.g. a hung teardown: the watchdog must still end the process
"""


def test_a_second_sigterm_does_not_raise_and_the_watchdog_stays_armed_after_the_block(tmp_path: Path) -> None:
    script = tmp_path / "armed.py"
    script.write_text(ARMED)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], env=_env(), cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    elapsed = time.monotonic() - started
    assert "second SIGTERM did not raise" in proc.stdout, proc.stderr
    assert "after the block" in proc.stdout, proc.stderr
    assert proc.returncode == 143, proc.stderr
    assert elapsed < 30, elapsed
    assert "still running 2 s after SIGTERM" in proc.stderr


def test_the_first_sigterm_stops_lightnings_child_process_observer() -> None:
    """Lightning's observer SIGKILLs its main process within 5 s of a child exiting non-zero (here
    the 'main process' is a stand-in sleeper, not pytest); after a SIGTERM every rank exits 143 on
    purpose, so the first SIGTERM must switch it off."""
    from lightning_fabric.strategies.launchers.subprocess_script import _ChildProcessObserver

    from xlt.training import preemption

    main = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(1); sys.exit(143)"])
    observer = _ChildProcessObserver(main_pid=main.pid, child_processes=[child], sleep_period=0.2)  # type: ignore[arg-type]
    try:
        observer.start()
        preemption.STATE.reset()
        preemption._note()  # the first SIGTERM, as the handler or the watchdog notes it
        child.wait(timeout=30)
        time.sleep(1.5)
        assert main.poll() is None, "the observer killed the main process after the child's 143"
    finally:
        preemption.STATE.reset()
        main.kill()
        main.wait()
    observer.join(timeout=5)
    assert not observer.is_alive()


def test_the_watchdog_does_not_wait_on_a_held_log_handler_lock() -> None:
    import io
    import logging
    import threading

    from xlt.training.preemption import _flush_unless_held

    handler = logging.StreamHandler(io.StringIO())
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with handler.lock:  # type: ignore[union-attr]
            held.set()
            done.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    started = time.monotonic()
    _flush_unless_held(handler, timeout=0.2)
    assert time.monotonic() - started < 2
    done.set()
    thread.join()


def test_state_is_reset_before_the_handler_and_the_watchdog_start(monkeypatch: Any) -> None:
    """A SIGTERM noted between installing the handler and starting the watchdog must survive."""
    import threading

    from xlt.training import preemption

    original = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if self.name == "xlt-sigterm":
            preemption.STATE.received_at = 1.0  # the handler ran just before the thread started
        original(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    try:
        with preemption.handling_sigterm(grace=30.0):
            seen = preemption.STATE.received_at
            preemption.STATE.received_at = None  # let the block end without arming the watchdog
    finally:
        preemption.STATE.reset()
    assert seen == 1.0


def test_the_default_grace_is_below_slurms_default_killwait() -> None:
    """SLURM sends SIGKILL KillWait (30 s by default) after SIGTERM: the watchdog must act first."""
    from xlt.training.preemption import DEFAULT_GRACE_S

    assert DEFAULT_GRACE_S < 30
