"""The run around the training loop: feature cache, start-up, and zero-shot evaluation of many languages.

    python benchmarks/bench_pipeline.py                    # all three
    python benchmarks/bench_pipeline.py --only cache,startup --repeats 1

- ``cache``: xlt's featurisation (``load_and_featurize``: read the raw files, tokenise, save the Arrow
  cache) of real UD-POS English train (17,500 sentences, tagging windows) and SNLI dev (9,842 pairs)
  into an empty cache directory (cold), then the same call again (warm: a cache hit). Target: warm <= 5%
  of cold. Repeats alternate cold and warm, each cold one in a fresh directory.
- ``startup``: ``python -m xlt.train`` as a user starts it, as a fresh process, for a tiny run
  (``model=tiny``, 32 SNLI pairs, XNLI en dev/test 32 examples) and the same run on e5_small: seconds
  from launching the process to its first training batch (``benchmarks/_first_step.py`` records it)
  and to the process's end; plus ``import xlt.orchestration.run`` alone in a fresh interpreter.
- ``zero_shot``: UD-POS target on e5_small, trained once (32 sentences) in one run directory. Then the
  evaluation of all chosen languages from that checkpoint: one ``python -m xlt.train`` process for all
  of them (xlt's way: the finished stage is reloaded and every language is a dataloader of one
  ``Trainer.test``) vs one process per language (``target.languages=[xx]``), each relaunched into a
  copy of the run's state so it also reloads the checkpoint instead of training. Both read the same
  warm feature cache and both validate English dev once per process. Target: >= 2x.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xlt.orchestration.rundir import RESULTS_FILE, STATE_FILE  # noqa: E402
from xlt.results.rows import read_results  # noqa: E402

QUIET = ["logger=none", "trainer.enable_progress_bar=false"]
TINY_RUN = ["+target=xnli", "target.train_task=snli", "target.train_split=dev", "target.max_train_examples=32",
            "target.max_eval_examples=32", "target.languages=[en]", "target.batch_size=16",
            "scale.per_device_batch_size=16", "target.epochs=1", "predictions=false"]  # fmt: skip
ZERO_SHOT_LANGUAGES = ("en", "de", "fr", "ru", "zh", "ar")


def _env(cache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["XLT_CACHE_DIR"] = str(cache_dir)
    return env


def xlt_process(args: list[str], cache_dir: Path, first_step: Path | None = None) -> dict[str, float]:
    """Run ``python -m xlt.train ARGS`` (through _first_step.py when timing the first batch); seconds."""
    env = _env(cache_dir)
    if first_step is not None:
        env["XLT_BENCH_FIRST_STEP"] = str(first_step)
        first_step.unlink(missing_ok=True)
        cmd = [sys.executable, str(ROOT / "benchmarks" / "_first_step.py"), *args]
    else:
        cmd = [sys.executable, "-m", "xlt.train", *args]
    launched = time.time()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    total = time.time() - launched
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    out = {"total_s": total}
    if first_step is not None:
        out["first_step_s"] = float(first_step.read_text()) - launched
    return out


def shared_cache(tmp: Path) -> Path:
    """A cache directory holding the converted e5 model (linked from the user's cache, else built)."""
    from xlt.modeling.encoder import _e5_dir

    cache = tmp / "cache"
    (cache / "models").mkdir(parents=True, exist_ok=True)
    user_cache = Path(os.environ.get("XLT_CACHE_DIR", Path.home() / ".cache" / "xlt")).expanduser()
    source = _e5_dir(user_cache)  # converts once if it is not there yet
    (cache / "models" / source.name).symlink_to(source)
    return cache


def bench_cache(repeats: int, tmp: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from xlt.data.datamodule import DataSettings, load_and_featurize
    from xlt.modeling.encoder import _e5_dir
    from xlt.tasks.loading import default_data_dir, load_split
    from xlt.tasks.registry import get_task

    cache = shared_cache(tmp)
    tokenizer = AutoTokenizer.from_pretrained(_e5_dir(cache))
    data_dir = default_data_dir()
    out: dict[str, Any] = {}
    for task, head, split, max_len in (
        ("udpos", "tagging", "train", 256),
        ("snli", "classification", "dev", 128),
    ):
        spec = get_task(task)
        cold, warm, parse = [], [], []
        for r in range(repeats):
            run_cache = tmp / f"features-{task}-{r}"
            settings = DataSettings("local", data_dir, run_cache, tokenizer)
            start = time.perf_counter()
            first, _ = load_and_featurize(spec, head, split, "en", settings, max_len, None)
            cold.append(time.perf_counter() - start)
            start = time.perf_counter()
            second, _ = load_and_featurize(spec, head, split, "en", settings, max_len, None)
            warm.append(time.perf_counter() - start)
            assert second["input_ids"] == first["input_ids"], "the cache returned other features"
            start = time.perf_counter()
            load_split(spec, split, "en", "local", data_dir)
            parse.append(time.perf_counter() - start)
            shutil.rmtree(run_cache)
        out[f"{task}_{split}"] = {
            "features": len(first),
            "cold_s": statistics.median(cold),
            "warm_s": statistics.median(warm),
            "raw_read_s": statistics.median(parse),
            "warm_over_cold": statistics.median(w / c for w, c in zip(warm, cold, strict=True)),
            "warm_over_cold_max": max(w / c for w, c in zip(warm, cold, strict=True)),
            "repeats": repeats,
        }
    return out


def bench_startup(repeats: int, tmp: Path) -> dict[str, Any]:
    cache = shared_cache(tmp)
    # Fill the feature cache once (a user's second run), so start-up is not featurisation.
    xlt_process([*TINY_RUN, "model=tiny", *QUIET, f"hydra.run.dir={tmp / 'warmup'}"], cache)
    runs: dict[str, list[dict[str, float]]] = {"import_xlt_run": [], "tiny": [], "e5_small": []}
    for r in range(repeats):
        start = time.time()
        subprocess.run(
            [sys.executable, "-c", "import xlt.orchestration.run"], cwd=ROOT, env=_env(cache), check=True
        )
        runs["import_xlt_run"].append({"total_s": time.time() - start})
        for model in ("tiny", "e5_small"):
            run_dir = tmp / f"startup-{model}-{r}"
            runs[model].append(xlt_process([*TINY_RUN, f"model={model}", *QUIET, f"hydra.run.dir={run_dir}"],
                                           cache, first_step=tmp / "first_step"))  # fmt: skip
            shutil.rmtree(run_dir, ignore_errors=True)
    return {
        name: {key: statistics.median(t[key] for t in times) for key in times[0]}
        | {f"{key}_max": max(t[key] for t in times) for key in times[0]}
        | {"repeats": len(times)}
        for name, times in runs.items()
    }


def bench_zero_shot(repeats: int, tmp: Path, languages: tuple[str, ...], max_eval: int) -> dict[str, Any]:
    cache = shared_cache(tmp)
    base = ["+target=udpos", "model=e5_small", "target.max_train_examples=32", "target.batch_size=16",
            "scale.per_device_batch_size=16", "target.epochs=1", f"target.max_eval_examples={max_eval}",
            *QUIET]  # fmt: skip
    langs = "[" + ",".join(languages) + "]"
    trained = tmp / "zero-shot-trained"
    xlt_process([*base, f"target.languages={langs}", f"hydra.run.dir={trained}"], cache)
    state = json.loads((trained / STATE_FILE).read_text())
    state.pop("finished", None)  # the target stage stays done: a relaunch reloads it and only evaluates
    state.pop("skipped", None)

    def relaunch(name: str, which: str) -> float:
        run_dir = tmp / name
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir()
        (run_dir / STATE_FILE).write_text(json.dumps(state))
        seconds = xlt_process([*base, f"target.languages={which}", f"hydra.run.dir={run_dir}"], cache)[
            "total_s"
        ]
        rows = read_results(run_dir / RESULTS_FILE)  # the rows, without the end marker
        tested = {r["language"] for r in rows if r["split"] == "test"}
        assert set(which.strip("[]").split(",")) <= tested, f"{name}: tested {sorted(tested)}"
        shutil.rmtree(run_dir)
        return seconds

    one_run, per_language = [], []
    for r in range(repeats):
        for way in ("one", "per") if r % 2 == 0 else ("per", "one"):
            if way == "one":
                one_run.append(relaunch("all", langs))
            else:
                per_language.append(sum(relaunch(f"only-{lang}", f"[{lang}]") for lang in languages))
    one, per = statistics.median(one_run), statistics.median(per_language)
    return {"languages": list(languages), "max_eval_examples": max_eval, "one_run_s": one,
            "one_process_per_language_s": per, "speedup": per / one, "one_run_all_s": one_run,
            "per_language_all_s": per_language, "repeats": repeats}  # fmt: skip


def measure(only: tuple[str, ...], repeats: int, languages: tuple[str, ...] = ZERO_SHOT_LANGUAGES,
            max_eval: int = 200) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="xlt-bench-pipeline-") as name:
        tmp = Path(name)
        for part in only:
            part_dir = tmp / part
            part_dir.mkdir()
            start = time.perf_counter()
            if part == "cache":
                out[part] = bench_cache(repeats, part_dir)
            elif part == "startup":
                out[part] = bench_startup(repeats, part_dir)
            elif part == "zero_shot":
                out[part] = bench_zero_shot(repeats, part_dir, languages, max_eval)
            else:
                raise ValueError(f"--only: unknown part {part!r} (cache, startup, zero_shot)")
            print(f"{part}: {time.perf_counter() - start:.0f} s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="cache,startup,zero_shot")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--languages", default=",".join(ZERO_SHOT_LANGUAGES))
    parser.add_argument("--max-eval", type=int, default=200, help="UD-POS sentences per language (zero_shot)")
    args = parser.parse_args()
    result = measure(
        tuple(args.only.split(",")), args.repeats, tuple(args.languages.split(",")), args.max_eval
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
