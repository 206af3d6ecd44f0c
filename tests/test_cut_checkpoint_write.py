"""What a kill in the middle of writing last.ckpt leaves (docs/slurm-requeue.md, xlt/training/preemption.py):
Lightning's ``_atomic_save`` writes a temporary file in ``$TMPDIR`` and moves it over last.ckpt only
when complete, and xlt has renamed the previous last.ckpt to prev.ckpt just before. A process ended
halfway through the real write (``os._exit``, as the watchdog does) leaves no last.ckpt, prev.ckpt
intact, and an orphaned partial file in ``$TMPDIR``; the relaunch resumes from prev.ckpt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from xlt import PROJECT_ROOT
from xlt.orchestration.rundir import PREVIOUS_CKPT, resume_checkpoint

SCRIPT = """
import os, sys
from pathlib import Path
import torch
import fsspec.implementations.local as local
from lightning_fabric.utilities.cloud_io import _atomic_save
from xlt.training.callbacks import keep_previous

last = Path(sys.argv[1])


class Cut:  # the file being written: half of the bytes, then the process is gone
    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(bytes(data)[: len(data) // 2])
        self._f.flush()
        os._exit(143)

    def __getattr__(self, name):
        return getattr(self._f, name)


original = local.LocalFileOpener._open


def _open(self):
    original(self)
    if "w" in self.mode:
        self.f = Cut(self.f)


local.LocalFileOpener._open = _open
keep_previous(last)
_atomic_save({"step": 2, "w": torch.zeros(50_000)}, last)
"""


def test_a_write_cut_short_leaves_no_last_ckpt_and_an_orphan_in_tmpdir(tmp_path: Path) -> None:
    ckpt_dir, tmpdir = tmp_path / "checkpoints", tmp_path / "tmp"
    ckpt_dir.mkdir()
    tmpdir.mkdir()
    last = ckpt_dir / "last.ckpt"
    torch.save({"step": 1}, last)  # the resume point before this save
    script = tmp_path / "cut.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(last)], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 143, proc.stderr
    assert not last.exists()
    previous = ckpt_dir / PREVIOUS_CKPT
    assert torch.load(previous)["step"] == 1
    orphans = [f for f in tmpdir.iterdir() if f.is_file()]  # (torch may add folders of its own there)
    assert len(orphans) == 1 and orphans[0].stat().st_size > 0
    assert resume_checkpoint(ckpt_dir) == previous
