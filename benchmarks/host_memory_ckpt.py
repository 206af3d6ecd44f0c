"""Peak host RAM per rank of a 2-process FSDP run, full against sharded checkpoints, beside
``xlt.plan``'s estimate (xlt/plan/host.py).

Runs ``python -m xlt.train`` with the arguments of ``WIDE`` in tests/test_plan_host.py (a random
tiny XLM-R widened to hidden H, FFN 4H; SNLI dev -> XNLI; ``scale=fsdp scale.devices=2
trainer.accelerator=cpu``; a ``last.ckpt`` save after every step and the weights-only ``best.ckpt``)
once per ``state_dict_type``, and polls every rank's ``VmHWM`` (its peak RSS, /proc/<pid>/status)
every 0.1 s until it exits. Prints one Markdown row per run.

    python benchmarks/host_memory_ckpt.py --hidden 512 --format full sharded
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
GB = 1e9


def wide(hidden: int) -> list[str]:
    return ["+target=xnli", "target.train_task=snli", "target.train_split=dev", "target.languages=[en]",
            "model=tiny", f"model.hidden_size={hidden}", f"model.intermediate_size={4 * hidden}",
            "model.num_attention_heads=4", "scale=fsdp", "scale.devices=2", "trainer.accelerator=cpu",
            "target.max_train_examples=32", "target.max_eval_examples=16", "target.batch_size=16",
            "scale.per_device_batch_size=8", "target.epochs=1", "scale.checkpoint_every_n_steps=1",
            "logger=none", "trainer.enable_progress_bar=false"]  # fmt: skip


def hwm(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def measure(hidden: int, fmt: str, cache_dir: str, work: Path) -> dict[str, float]:
    run_dir = work / f"h{hidden}-{fmt}"
    argv = [sys.executable, "-m", "xlt.train", *wide(hidden), f"scale.strategy.state_dict_type={fmt}",
            f"data.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    log = open(work / f"h{hidden}-{fmt}.log", "w")  # noqa: SIM115 (the run writes it until it exits)
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    peaks: dict[int, int] = {}  # pid -> VmHWM; rank 0 is the launched process, rank 1 its python child
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            pids = [proc.pid] + [c.pid for c in root.children(recursive=True) if "python" in c.name()]
        except psutil.NoSuchProcess:
            pids = [proc.pid]
        for pid in pids:
            value = hwm(pid)
            if value is not None:
                peaks[pid] = max(peaks.get(pid, 0), value)
        time.sleep(0.1)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{fmt}: xlt.train failed ({proc.returncode}), see {log.name}")
    best = run_dir / "checkpoints" / "target" / "best.ckpt"
    size = sum(p.stat().st_size for p in best.rglob("*")) if best.is_dir() else best.stat().st_size
    others = [v for pid, v in peaks.items() if pid != proc.pid]
    return {
        "rank0": peaks[proc.pid] / GB,
        "rank1": max(others, default=0) / GB,
        "best": size / GB,
        "wall": wall,
    }


def plan(hidden: int, fmt: str) -> tuple[float, float, float]:
    from hydra import compose, initialize_config_dir

    from xlt.config import validate
    from xlt.plan.host import estimate_host

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("train", overrides=[*wide(hidden), f"scale.strategy.state_dict_type={fmt}"])
    host = estimate_host(validate(cfg), gpu=False)
    return host.rank0 / GB, host.other / GB, host.checkpoint / GB


def main() -> None:
    from xlt.utils.console import text_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--format", nargs="+", default=["full", "sharded"], choices=["full", "sharded"])
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xlt-hostmem-"))
    cache = args.cache_dir or str(work / "cache")
    header = [
        "hidden",
        "checkpoints",
        "C (full)",
        "measured rank 0",
        "measured rank 1",
        "plan rank 0",
        "plan rank 1",
        "plan/measured (rank 0, rank 1)",
        "wall",
    ]
    rows = []
    for fmt in args.format:
        got = measure(args.hidden, fmt, cache, work)
        p0, p1, c = plan(args.hidden, fmt)
        print(f"measured {fmt} checkpoints in {got['wall']:.0f} s", file=sys.stderr, flush=True)
        rows.append(
            [
                args.hidden,
                fmt,
                f"{c:.2f} GB",
                f"{got['rank0']:.2f} GB",
                f"{got['rank1']:.2f} GB",
                f"{p0:.2f} GB",
                f"{p1:.2f} GB",
                f"{p0 / got['rank0']:.2f}, {p1 / got['rank1']:.2f}",
                f"{got['wall']:.0f} s",
            ]
        )
    print(text_table(header, rows))


if __name__ == "__main__":
    main()
