"""Outputs of a fixed set of runs, hashed, to prove a restructuring changed no result.

    python benchmarks/identical.py run OUT [--quick] [--only NAME ...]
    python benchmarks/identical.py compare OUT_BEFORE OUT_AFTER

``run`` trains, in fresh run directories under OUT, a tiny run of each target (every XTREME target
whose files or fixtures are here; an intermediate stage in one of them), the CPU demo (``make
demo``'s run) and the CPU size sweep (``+sweep=demo_scale_gap``), then asks ``xlt.results`` and
``xlt.plan`` about them. It writes ``OUT/manifest.json``: for every result row file, prediction file,
``xlt.results`` output (printed and written) and ``xlt.plan`` output, the SHA-256 of its content with
only what cannot match between two checkouts taken out (the git commit and the run directory of each
row, the run directory in printed text). ``--quick`` caps the demo and the sweep (2 of its 16 jobs)
so that the whole check takes minutes, not an hour. ``hash OUT`` rewrites the manifest from what a run left on disk. ``compare`` exits 1 and names every file that
differs or is missing on one side. Informational files (``config.yaml``, ``state.json``) are hashed
too but reported apart: a restructuring may legitimately rename a key.

Run it on the commit before and after a change, with the same flags, on the same machine.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("XLT_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()
ROW_VOLATILE = ("git_commit", "run_dir")
INFORMATIONAL = ("config.yaml", "state.json")

TINY = (
    "model=tiny",
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "seed=3",
    "scale.per_device_batch_size=8",
    "target.batch_size=8",
    "target.eval_batch_size=8",
    "target.max_train_examples=48",
    "target.max_eval_examples=24",
    "target.epochs=1",
    "target.lr=5e-4",
)
RETRIEVAL = ("model=tiny", "logger=csv", "trainer.enable_progress_bar=false", "seed=3")


def _pawsx(data: Path) -> list[str]:
    (data / "x-final").mkdir(parents=True)
    (data / "x-final" / "en").symlink_to(DATA / "pawsx/hf_dummy/en")
    (data / "pawsx").symlink_to(DATA / "pawsx")
    return [f"data.dir={data}", "data.source=local"]


def _panx(data: Path) -> list[str]:
    (data / "panx_dataset").mkdir(parents=True)
    for lang in ("en", "de", "zh"):
        (data / "panx_dataset" / lang).symlink_to(DATA / "panx/hf_dummy" / lang)
    return [f"data.dir={data}", "data.source=local"]


def _mlqa(data: Path) -> list[str]:
    data.mkdir(parents=True)
    (data / "squad_v1.1").symlink_to(DATA / "squad_v1.1")
    (data / "MLQA_V1").symlink_to(DATA / "mlqa/hf_dummy/MLQA_V1")
    return [f"data.dir={data}", "data.source=local"]


def _tydiqa(data: Path) -> list[str]:
    """The official layout from the genuine fixtures plus an English copy of one question per file
    (the fixtures hold no English question), as tests/test_qa_pipeline.py builds it."""
    (data / "tydiqa").mkdir(parents=True)
    for split, english_id in (("train", "english-1-0"), ("dev", "english-2-0")):
        raw = DATA / f"tydiqa/hf_dummy/tydiqa-goldp-v1.1-{split}.json"
        content = json.loads(raw.read_text(encoding="utf-8"))
        english = copy.deepcopy(content["data"][0])
        english["paragraphs"][0]["qas"][0]["id"] = english_id
        content["data"].append(english)
        out = data / f"tydiqa/tydiqa-goldp-v1.1-{split}.json"
        out.write_text(json.dumps(content), encoding="utf-8")
    return [f"data.dir={data}", "data.source=local"]


# name -> (overrides, data-directory builder or None)
RUNS: dict[str, tuple[tuple[str, ...], Callable[[Path], list[str]] | None]] = {
    "xnli": (
        (
            "+target=xnli",
            *TINY,
            "target.train_task=snli",
            "target.train_split=dev",
            "target.languages=[en,de,sw]",
            "target.max_seq_length=64",
        ),
        None,
    ),
    "anli_xnli": (
        (
            "+intermediate=anli_rounds",
            "+target=xnli",
            *TINY,
            "target.train_task=snli",
            "target.train_split=dev",
            "target.languages=[en,de]",
            "target.max_seq_length=64",
            "intermediate.train_split=dev_r1",
            "intermediate.dev_split=dev_r3",
            "intermediate.max_train_examples=48",
            "intermediate.max_eval_examples=24",
            "intermediate.batch_size=8",
            "intermediate.max_seq_length=64",
            "intermediate.epochs=1",
        ),
        None,
    ),
    "pawsx": (("+target=pawsx", *TINY, "target.max_seq_length=64", "target.languages=[en,de]"), _pawsx),
    "udpos": (("+target=udpos", *TINY, "target.max_seq_length=64", "target.languages=[en,de,ja]"), None),
    "panx": (("+target=panx", *TINY, "target.max_seq_length=64", "target.languages=[en,de,zh]"), _panx),
    "xquad": (("+target=xquad", *TINY, "target.languages=[en,de,zh]"), None),
    "mlqa": (("+target=mlqa", *TINY, "target.languages=[en]"), _mlqa),
    "tydiqa": (("+target=tydiqa", *TINY, "target.languages=[en,ar]"), _tydiqa),
    "tatoeba": (("+target=tatoeba", *RETRIEVAL, "target.languages=[de,fr]"), None),
    "bucc2018": (("+target=bucc2018", *RETRIEVAL), None),
}
DEMO = ("+intermediate=anli_rounds", "+target=xnli", "+demo=cpu", "trainer.enable_progress_bar=false")
DEMO_QUICK = (
    "intermediate.max_train_examples=64",
    "intermediate.max_eval_examples=48",
    "target.max_train_examples=64",
    "target.max_eval_examples=48",
    "probe.max_examples=40",
)
SWEEP = ("-m", "+sweep=demo_scale_gap", "trainer.enable_progress_bar=false")
SWEEP_QUICK = (
    "hydra.sweeper.params.intermediate=none",
    "hydra.sweeper.params.target=xnli",
    "hydra.sweeper.params.seed=1",
    "target.max_train_examples=64",
    "target.max_eval_examples=48",
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("WANDB_MODE", "offline")
    return env


def _call(args: list[str], log: Path) -> str:
    """Run ``python -m <args>`` from the checkout; its output goes to ``log``, its standard output
    alone to ``printed/<log's name>`` too, and is returned."""
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=_env(), capture_output=True, text=True)
    log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    (log.parent / "printed").mkdir(exist_ok=True)
    (log.parent / "printed" / log.name).write_text(proc.stdout, encoding="utf-8")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])}... failed ({proc.returncode}); its output: {log}")
    return proc.stdout


def _normal_rows(path: Path) -> str:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("end_of_results"):  # its sha256 covers the volatile fields: the rows are compared
            continue
        for key in ROW_VOLATILE:
            row.pop(key, None)
        rows.append(json.dumps(row, sort_keys=True))
    return "\n".join(rows)


def _normal_text(text: str, out: Path) -> str:
    text = text.replace(str(out), "<OUT>")
    return re.sub(r"\b[0-9a-f]{40}\b", "<commit>", text)


def _digest(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def _hash_run_dir(run_dir: Path, out: Path, manifest: dict[str, str]) -> None:
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file() or "checkpoints" in path.parts or "csv" in path.parts or ".hydra" in path.parts:
            continue
        rel = str(path.relative_to(out))
        if path.name == "results.jsonl":
            manifest[rel] = _digest(_normal_rows(path))
        elif "predictions" in path.parts or path.name in INFORMATIONAL:
            manifest[rel] = _digest(_normal_text(path.read_text(encoding="utf-8"), out))


def _printed(out: Path, log_name: str) -> str:
    """A tool's standard output (``printed/``; a run of an older version of this script kept only
    the log of both streams)."""
    path = out / "printed" / log_name
    return (path if path.exists() else out / log_name).read_text(encoding="utf-8")


def manifest_of(out: Path) -> dict[str, str]:
    """The hashes of everything ``run`` left in ``out``, read from disk."""
    manifest: dict[str, str] = {}
    for parent in (out / "runs", out / "sweep"):
        for run_dir in sorted(p for p in parent.glob("*") if p.is_dir() and p.name != "analysis"):
            _hash_run_dir(run_dir, out, manifest)
    for tables in sorted(p for p in (out / "tables").glob("*") if p.is_dir()):
        printed = _printed(out, f"{tables.name}.results.log")
        manifest[f"tables/{tables.name}/printed"] = _digest(_normal_text(printed, out))
        for path in sorted(tables.rglob("*")):
            if path.is_file() and path.suffix != ".png":  # PNG bytes carry matplotlib's metadata
                text = path.read_text(encoding="utf-8")
                manifest[str(path.relative_to(out))] = _digest(_normal_text(text, out))
    for log in sorted(out.glob("*.plan.log")):
        name = log.name.removesuffix(".plan.log")
        manifest[f"plan/{name}"] = _digest(_normal_text(_printed(out, log.name), out))
    return manifest


def _results(target: Path, out: Path, name: str, *extra: str) -> None:
    tables = out / "tables" / name
    tables.mkdir(parents=True, exist_ok=True)
    _call(["xlt.results", str(target), "--out", str(tables), *extra], out / f"{name}.results.log")


def run(out: Path, quick: bool, only: list[str]) -> None:
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=False)
    for name, (overrides, build) in RUNS.items():
        if only and name not in only:
            continue
        extra = build(out / "data" / name) if build else []
        print(f"[identical] {name}", flush=True)
        _call(["xlt.train", *overrides, *extra, f"hydra.run.dir={out}/runs/{name}"], out / f"{name}.log")
        _call(["xlt.plan", *overrides, *extra], out / f"{name}.plan.log")
    if (out / "runs").exists():
        _results(out / "runs", out, "tiny", "--include-debug", "--no-plots")
    if not only or "demo" in only:
        print("[identical] demo", flush=True)
        demo = [*DEMO, *(DEMO_QUICK if quick else ())]
        _call(["xlt.train", *demo, f"hydra.run.dir={out}/runs/demo"], out / "demo.log")
        _results(out / "runs" / "demo", out, "demo")
    if not only or "sweep" in only:
        print("[identical] sweep", flush=True)
        sweep = [*SWEEP, *(SWEEP_QUICK if quick else ()), f"hydra.sweep.dir={out}/sweep"]
        _call(["xlt.train", *sweep], out / "sweep.log")
        _results(out / "sweep", out, "sweep", "--x", "params_non_embedding")
        _call(["xlt.plan", "-m", "+sweep=demo_scale_gap", "-v"], out / "sweep.plan.log")
    write_manifest(out)


def write_manifest(out: Path) -> None:
    manifest = manifest_of(out.resolve())
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    (out / "manifest.json").write_text(text, encoding="utf-8")
    print(f"[identical] {len(manifest)} files hashed: {out / 'manifest.json'}")


def compare(before: Path, after: Path) -> int:
    a = json.loads((before / "manifest.json").read_text(encoding="utf-8"))
    b = json.loads((after / "manifest.json").read_text(encoding="utf-8"))
    failed = informational = 0
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        side = "missing after" if key not in b else "missing before" if key not in a else "differs"
        if Path(key).name in INFORMATIONAL:
            informational += 1
            print(f"note: {key}: {side} (informational)")
        else:
            failed += 1
            print(f"DIFFERENT: {key}: {side}")
    same = len(set(a) & set(b)) - failed - informational
    print(f"{same} identical, {failed} different, {informational} informational differences")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--only", nargs="*", default=[], help=f"of {', '.join([*RUNS, 'demo', 'sweep'])}")
    h = sub.add_parser("hash", help="(re)write OUT/manifest.json from what a run left in OUT")
    h.add_argument("out", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        run(args.out, args.quick, args.only)
    elif args.command == "hash":
        write_manifest(args.out)
    else:
        raise SystemExit(compare(args.before, args.after))


if __name__ == "__main__":
    main()
