"""``python -m xlt.train`` with one addition: the wall-clock time (``time.time()``) of the first training
batch is written to the file named by ``$XLT_BENCH_FIRST_STEP``. Used by bench_pipeline.py's start-up
benchmark; the hook wraps TransferModule's own ``on_train_batch_start`` and changes nothing else."""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xlt.modeling.module import TransferModule  # noqa: E402

_OUT = Path(os.environ["XLT_BENCH_FIRST_STEP"])
_original = TransferModule.on_train_batch_start


def _record_first_step(self: TransferModule, batch: Any, batch_idx: int) -> Any:
    if not _OUT.exists():
        _OUT.write_text(repr(time.time()))
    return _original(self, batch, batch_idx)


TransferModule.on_train_batch_start = _record_first_step  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.argv = ["xlt.train", *sys.argv[1:]]
    runpy.run_module("xlt.train", run_name="__main__")
