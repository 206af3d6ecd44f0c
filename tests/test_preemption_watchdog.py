"""The SIGTERM watchdog (xlt/preemption.py) with real processes and real signals: a rank blocked in a
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

from xlt import PROJECT_ROOT

SCRIPT = """
import sys, time
import torch.distributed as dist
from xlt.preemption import handling_sigterm

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
