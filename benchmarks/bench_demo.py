"""``make demo``'s run, timed per stage, with its peak memory (``make bench-demo``; not in ``make bench``,
whose 15-minute budget it would take a third of).

    python benchmarks/bench_demo.py [--out benchmarks/results/demo-<date>.json]

Runs ``python -m xlt.train +intermediate=anli_rounds +target=xnli +demo=cpu`` into a temporary run
directory and stamps every line the run prints as it arrives. Stage boundaries are xlt's own log lines
``intermediate: training ...`` and ``target: training ...``: start-up and the Tatoeba probe of the
pretrained encoder come before the first, ANLI training, its dev evaluation and the second probe
between them, and XNLI training plus dev and test evaluation after the second. Peak memory is the
child's peak resident set size (``getrusage(RUSAGE_CHILDREN)``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ["+intermediate=anli_rounds", "+target=xnli", "+demo=cpu", "trainer.enable_progress_bar=false"]
MARKERS = (("intermediate", "intermediate: training"), ("target", "target: training"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (e.g. a smaller smoke run)")
    args = parser.parse_args()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="xlt-bench-demo-") as tmp:
        cmd = [sys.executable, "-m", "xlt.train", *DEMO, *args.overrides, f"hydra.run.dir={tmp}/run"]
        start = time.perf_counter()
        marks = {"start": 0.0}
        with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as proc:  # fmt: skip
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                for stage, marker in MARKERS:
                    if marker in line and stage not in marks:
                        marks[stage] = time.perf_counter() - start
        total = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"the demo failed ({proc.returncode})")
        from xlt.orchestration.rundir import RESULTS_FILE
        from xlt.results.rows import read_results

        # The target's test rows, so that a timing can be checked to come from the same run as the
        # README's table (the language accuracies, their mean, the gap).
        scores = {f"{r['language']}/{r['metric']}": r["value"]
                  for r in read_results(Path(tmp) / "run" / RESULTS_FILE)
                  if r["stage"] == "target" and r["split"] == "test"}  # fmt: skip
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    stages = {
        "startup_and_pretrained_probe_s": marks.get("intermediate"),
        "intermediate_stage_and_probe_s": marks["target"] - marks["intermediate"]
        if len(marks) == 3
        else None,
        "target_stage_s": total - marks["target"] if "target" in marks else None,
    }
    result = {"date": datetime.date.today().isoformat(), "commit": commit, "command": " ".join(cmd[1:]),
              "total_s": total, "peak_rss_mib": peak, **stages, "target_test": scores}  # fmt: skip
    text = json.dumps(result, indent=1)
    print(text)
    out = args.out or ROOT / "benchmarks" / "results" / f"demo-{result['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
