"""``make bench``: every benchmark in one invocation; writes ``benchmarks/results/<date>.json`` and
``benchmarks/results/<date>.md`` (the table for the README's performance section).

    python benchmarks/run_all.py                          # the defaults: sized for < 15 min on 2 idle cores
    python benchmarks/run_all.py --train-repeats 1 --pipeline-repeats 1 --examples 128   # a quick check

Parts, each its own script with its own docstring: bench_training.py (xlt vs HF Trainer vs a bare
loop, padding efficiency), bench_pipeline.py (feature cache, start-up, zero-shot evaluation of many
languages), bench_bucc_mining.py (margin mining at a reduced size by default: 20,000 x 60,000, where
the dense similarity matrix would need 4.5 GiB; BUCC size is ``--bucc-args "--n-src 150000 --n-trg
400000"``, ~15 min on its own). Numbers are medians over the repeats; [min-max] is the spread.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_pipeline  # noqa: E402
import bench_training  # noqa: E402

from xlt.utils.console import text_table  # noqa: E402


def machine() -> dict[str, Any]:
    import pytorch_lightning
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kib = 0
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "lightning": pytorch_lightning.__version__, "load_average_at_start": load}  # fmt: skip


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def bucc(args: str) -> dict[str, Any]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_bucc_mining.py"), *shlex.split(args)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out[out.index("{") :])


def spread(value: float, low: float, high: float, fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(value)} [{fmt.format(low)}-{fmt.format(high)}]"


def markdown(result: dict[str, Any]) -> str:
    m, lines = result["machine"], []
    lines.append(f"Measured {result['date']} at commit `{result['commit']}` by `make bench` "
                 f"({result['wall_s'] / 60:.1f} min): {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
                 f"torch {m['torch']} ({m['torch_threads']} threads), transformers {m['transformers']}, "
                 f"Lightning {m['lightning']}; load average {m['load_average_at_start']} at the start. "
                 "Medians over the repeats, [min-max] the spread.")  # fmt: skip
    lines.append("")
    t = result.get("training")
    if t:
        lines.append(f"Training, {t['examples']} SNLI dev pairs, batch {t['batch_size']}, max length {t['max_len']}, "
                     "fp32, all weights trained, one epoch, e5_small, CPU:")  # fmt: skip
        lines.append("")
        trainer_rows = []
        names = {"xlt": "xlt", "bare": "bare PyTorch loop over xlt's batches",
                 "hf_group_by_length": "HF Trainer, group_by_length", "hf_dynamic": "HF Trainer, dynamic padding",
                 "hf_fixed": "HF Trainer, fixed padding to 128 (XTREME)"}  # fmt: skip
        for key, r in t["trainers"].items():
            throughput = spread(r["examples_per_s"], r["examples_per_s_min"], r["examples_per_s_max"])
            trainer_rows.append(
                [
                    names.get(key, key),
                    throughput,
                    f"{r['seconds_per_step']:.3f}",
                    f"{r['padding_efficiency']:.2f}",
                    r["repeats"],
                ]
            )
        header = ["trainer", "examples/s", "s / optimizer step", "padding efficiency", "repeats"]
        lines += [text_table(header, trainer_rows), ""]
    target_rows: list[list[str]] = []

    def row(name: str, value: float | None, target: str, ok: bool | None, fmt: str = "{:.2f}") -> None:
        shown = "n/a" if value is None else fmt.format(value)
        target_rows.append([name, shown, target, "" if ok is None else ("yes" if ok else "NO")])

    if t:
        r = t["ratios"]
        for key, target in (("xlt_vs_hf_group_by_length", 1.1), ("xlt_vs_hf_fixed", 2.5)):
            if key in r:
                row(
                    f"throughput, {key.replace('_', ' ')}",
                    r[key],
                    f">= {target}x",
                    r[key] >= target,
                    "{:.2f}x",
                )
        if "xlt_vs_hf_dynamic" in r:
            row("throughput, xlt vs hf dynamic", r["xlt_vs_hf_dynamic"], "(reported)", None, "{:.2f}x")
        trainers = t["trainers"]
        if "bare" in trainers and "hf_group_by_length" in trainers:
            # The most any trainer of this model, data and numerics reaches against HF group_by_length.
            ceiling = trainers["bare"]["examples_per_s"] / trainers["hf_group_by_length"]["examples_per_s"]
            row(
                "ceiling: bare loop over xlt's batches vs hf group by length",
                ceiling,
                "(reported)",
                None,
                "{:.2f}x",
            )
        if "xlt_step_over_bare_step" in r:
            v = r["xlt_step_over_bare_step"]
            row("framework overhead: xlt step / bare-loop step", v, "<= 1.10", v <= 1.10)
        for name, p in t["padding"].items():
            row(f"padding efficiency, xlt training batches, {name} ({p['features']} features, batch {p['batch_size']})",
                p["padding_efficiency"], ">= 0.95", p["padding_efficiency"] >= 0.95)  # fmt: skip
    pipe = result.get("pipeline", {})
    z = pipe.get("zero_shot")
    if z:
        row(f"zero-shot eval, {len(z['languages'])} UD-POS languages x {z['max_eval_examples']} sentences: one process "
            f"per language ({z['one_process_per_language_s']:.0f} s) / one run ({z['one_run_s']:.0f} s)",
            z["speedup"], ">= 2x", z["speedup"] >= 2, "{:.2f}x")  # fmt: skip
    for name, c in pipe.get("cache", {}).items():
        row(f"feature cache, {name} ({c['features']} features): warm {c['warm_s']:.2f} s / cold {c['cold_s']:.1f} s",
            c["warm_over_cold"], "<= 0.05", c["warm_over_cold"] <= 0.05, "{:.3f}")  # fmt: skip
    s = pipe.get("startup")
    if s:
        for model in ("tiny", "e5_small"):
            if model in s:
                row(f"start-up to the first training step, 32-example {model} run (whole run {s[model]['total_s']:.1f} s)",
                    s[model]["first_step_s"], "(reported)", None, "{:.1f} s")  # fmt: skip
        row(
            "`import xlt.orchestration.run` in a fresh interpreter",
            s["import_xlt_run"]["total_s"],
            "(reported)",
            None,
            "{:.1f} s",
        )
    b = result.get("bucc")
    if b:
        row(f"BUCC-style mining {b['n_src']:,} x {b['n_trg']:,} (dim {b['dim']}, k {b['k']}): {b['mine_seconds']:.0f} s, "
            f"extra peak {b['mining_extra_peak_mib']:.0f} MiB vs dense {b['dense_sim_matrix_mib'] / 1024:.1f} GiB",
            b["planted_f1"], "planted-pair F1 100", b["planted_f1"] == 100.0, "{:.1f}")  # fmt: skip
    lines.append(text_table(["target (issue 15)", "measured", "target", "met"], target_rows))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--train-repeats", type=int, default=2)
    parser.add_argument("--pipeline-repeats", type=int, default=2)
    parser.add_argument("--zero-shot-repeats", type=int, default=1)
    parser.add_argument("--languages", default="en,de,fr,ru", help="UD-POS languages of the zero-shot part")
    parser.add_argument("--bucc-args", default="--n-src 20000 --n-trg 60000")
    parser.add_argument(
        "--skip", default="", help="comma-separated: training, cache, startup, zero_shot, bucc"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    start = time.perf_counter()
    result: dict[str, Any] = {"date": datetime.date.today().isoformat(), "commit": commit(), "machine": machine(),
                              "args": vars(args) | {"out": str(args.out)}}  # fmt: skip
    if "training" not in skip:
        result["training"] = bench_training.measure(args.examples, args.train_repeats)
    result["pipeline"] = {}
    for part, repeats in (("cache", args.pipeline_repeats), ("startup", args.pipeline_repeats),
                          ("zero_shot", args.zero_shot_repeats)):  # fmt: skip
        if part not in skip:
            languages = tuple(args.languages.split(","))
            result["pipeline"].update(bench_pipeline.measure((part,), repeats, languages))
    if "bucc" not in skip:
        result["bucc"] = bucc(args.bucc_args)
    result["wall_s"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / result["date"]
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    stem.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
