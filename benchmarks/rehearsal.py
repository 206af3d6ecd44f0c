"""``make rehearsal``: the study sweep (``+sweep=scale_gap``) at stand-in size, through the real multirun.

    python -m benchmarks.rehearsal [--out DIR] [--no-faults] [OVERRIDE ...]

Runs ``python -m xlt.train -m +sweep=rehearsal`` (conf/sweep/rehearsal.yaml), sends SIGTERM to the
process group in chosen jobs (``FAULTS``, through tests/faults/sitecustomize.py), relaunches the same
command until the sweep ends, runs ``python -m xlt.results`` over it, and writes the table (job,
passed, wall time, launches, peak host RAM per rank) to ``benchmarks/results/rehearsal-<date>.{md,json}``.
OVERRIDEs narrow the sweep (``model=tiny target=xnli,tatoeba``). Details: docs/sweeps.md, "The rehearsal".

Peak host RAM per rank: ``VmHWM`` of ``/proc/<pid>/status``, read every 0.2 s. Rank 1 is a process
of its own per job; rank 0 is the multirun's process, reused for every job, so its mark is reset
(``5`` into ``/proc/<pid>/clear_refs``) as each job starts, and includes what the process already held.

The data (``build_data``): links to ``../shared/data``, real fixture excerpts where a split is not there,
derived files where an excerpt is too small for 2 ranks. The numbers mean nothing; the code paths run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from xlt import PROJECT_ROOT

FAULTS_DIR = PROJECT_ROOT / "tests" / "faults"
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
# (job folder, XLT_FAULT): one SIGTERM to the job's process group per launch, in sweep order.
FAULTS = (
    ("intermediate=mnli,model=tiny,seed=1,target=udpos", "last.ckpt:write:0:TERMGROUP"),  # DDP, rank 0 saving
    ("intermediate=none,model=tiny_xl,seed=1,target=xnli", "xnli:training:1:TERMGROUP"),  # FSDP, mid-epoch
    ("intermediate=none,model=tiny_qwen,seed=1,target=pawsx", "pawsx:validation:0:TERMGROUP"),  # FSDP
)
JOB_LINE = re.compile(r"\[HYDRA\]\s+#(\d+) : (.*)$")
EXCLUDED = ("+sweep=", "data.", "hydra", "trainer.accelerator", "trainer.devices", "logger", "resume")


def build_data(root: Path, shared: Path) -> Path:
    """``root/data``: real directories, a link for every file (shared data first, then the fixtures)."""
    sys.path.insert(0, str(PROJECT_ROOT))
    import datasets

    from tests import hub_fixtures

    datasets.disable_progress_bars()

    fixtures = hub_fixtures.build(root / "fixtures", shared).local
    data = root / "data"

    def merge(dst: Path, sources: list[Path]) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        for name in sorted({p.name for s in sources if s.is_dir() for p in s.iterdir()}):
            here = [s / name for s in sources if (s / name).exists()]
            if all(p.is_dir() for p in here):
                merge(dst / name, here)
            elif not (dst / name).exists():
                (dst / name).symlink_to(here[0].resolve())

    merge(data, [shared, fixtures])
    # Where an evaluation set of the excerpts has one example (2 ranks need 2 at least), a derived
    # file repeats it; where a split has no excerpt at all, the nearest real one stands in.
    derived = {
        "bucc2018/fr-en/fr-en.training.{x}": ("bucc2018/tfds_dummy/fr-en/fr-en.sample.{x}", "link"),
        "x-final/en/dev_2k.tsv": ("pawsx/hf_dummy/en/train.tsv", "link"),
        "MLQA_V1/test/test-context-en-question-en.json": (
            "mlqa/hf_dummy/MLQA_V1/test/test-context-en-question-en.json",
            "squad",
        ),
        # TyDiQA: English train = the SQuAD v1.1 train excerpt; tested on the Arabic dev excerpt and the
        # Finnish train excerpt (per-language files, XTREME's layout)
        "tydiqa/tydiqa-goldp-v1.1-train/tydiqa.goldp.en.train.json": (
            "squad_v1.1/allennlp_fixture_squad_train_excerpt.json",
            "link",
        ),
        "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.ar.dev.json": (
            "tydiqa/hf_dummy/tydiqa-goldp-v1.1-dev.json",
            "squad",
        ),
        "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.fi.dev.json": (
            "tydiqa/hf_dummy/tydiqa-goldp-v1.1-train.json",
            "link",
        ),
    }
    for lang in ("en", "de", "ar"):
        for split in ("train", "dev", "test"):
            derived[f"panx_dataset/{lang}/{split}"] = (f"panx/hf_dummy/{lang}/{split}", "blocks")
    for layout, (official, how) in derived.items():
        for ext in ("fr", "en", "gold") if "{x}" in layout else ("",):
            link, source = data / layout.format(x=ext), shared / official.format(x=ext)
            link.parent.mkdir(parents=True, exist_ok=True)
            assert not any(p.is_symlink() for p in link.parents)  # never write into the shared folder
            link.unlink(missing_ok=True)
            if how == "link":
                link.symlink_to(source)
            elif how == "blocks":  # blank-line separated sentences, twice
                text = source.read_text(encoding="utf-8").strip("\n")
                link.write_text(f"{text}\n\n{text}\n", encoding="utf-8")
            else:  # SQuAD JSON: every question twice (the copy's id suffixed)
                doc = json.loads(source.read_text(encoding="utf-8"))
                for article in doc["data"]:
                    for para in article["paragraphs"]:
                        para["qas"] += [{**qa, "id": f"{qa['id']}-copy"} for qa in para["qas"]]
                link.write_text(json.dumps(doc), encoding="utf-8")
    return data


def job_name(overrides: str) -> str:
    """The job folder Hydra names from the announced overrides (scale_gap's override_dirname)."""
    kept = [o for o in overrides.split() if not o.startswith(EXCLUDED)]
    return ",".join(sorted(kept))


def vm_hwm(pid: int) -> int | None:
    """The process's peak resident set in bytes (VmHWM), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return []


@dataclasses.dataclass
class Job:
    name: str
    wall_s: float = 0.0
    launches: int = 0
    peak: dict[int, int] = dataclasses.field(default_factory=dict)  # rank -> bytes
    interrupted: str = ""


class Monitor:
    """Follows one launch: which job runs (Hydra's ``#k : overrides`` lines), its time and peaks."""

    def __init__(
        self, proc: subprocess.Popen[str], jobs: dict[str, Job], log: Path, on_job: Callable[[], object]
    ) -> None:
        self.proc, self.jobs, self.log, self.on_job = proc, jobs, log, on_job
        self.current: Job | None = None
        self.stale: set[int] = set()  # rank 1 of the previous job, still exiting
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def _rank1(self) -> list[int]:
        found = []
        for child in children(self.proc.pid):
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"hydra.job.name=train_ddp_process_1" in cmd:
                found.append(child)
        return found

    def _sample(self) -> None:
        while self.proc.poll() is None:
            with self.lock:
                job = self.current
                if job is not None:
                    rank1 = [pid for pid in self._rank1() if pid not in self.stale]  # not the last job's
                    for rank, pids in ((0, [self.proc.pid]), (1, rank1)):
                        for pid in pids:
                            peak = vm_hwm(pid)
                            if peak is not None:
                                job.peak[rank] = max(job.peak.get(rank, 0), peak)
            time.sleep(0.2)

    def _switch(self, job: Job | None) -> None:
        now = time.monotonic()
        with self.lock:
            if self.current is not None:
                self.current.wall_s += now - self.started
            self.current, self.started, self.stale = job, now, set(self._rank1())
            if job is not None:
                job.launches += 1
                with contextlib.suppress(OSError):  # rank 0's high-water mark restarts with the job
                    Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def follow(self) -> int:
        assert self.proc.stdout is not None
        with open(self.log, "a") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()
                match = JOB_LINE.search(line.rstrip("\n"))
                if match:
                    name = job_name(match.group(2))
                    self._switch(self.jobs.setdefault(name, Job(name)))
                    self.on_job()  # the table so far
        status = self.proc.wait()
        self._switch(None)
        return status


def launch(
    argv: list[str],
    jobs: dict[str, Job],
    log: Path,
    fault: tuple[str, str] | None,
    on_job: Callable[[], object],
) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if fault is not None:
        mark = log.parent / f"fault-{len(list(log.parent.glob('fault-*')))}.mark"
        env.update(
            XLT_FAULT=fault[1],
            XLT_FAULT_JOB=fault[0],
            XLT_FAULT_MARK=str(mark),
            PYTHONPATH=os.pathsep.join([str(FAULTS_DIR), env.get("PYTHONPATH", str(PROJECT_ROOT))]),
        )
    proc = subprocess.Popen(
        argv,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return Monitor(proc, jobs, log, on_job).follow()


def sweep_jobs(overrides: list[str]) -> list[str]:
    """The job folders of the sweep (its axes, narrowed by ``key=a,b`` overrides)."""
    from omegaconf import OmegaConf

    sweep = PROJECT_ROOT / "conf" / "sweep"
    axes = dict(OmegaConf.load(sweep / "scale_gap.yaml").hydra.sweeper.params)
    axes.update(OmegaConf.load(sweep / "rehearsal.yaml").hydra.sweeper.params)
    for override in overrides:
        key, _, value = override.partition("=")
        if key in axes:
            axes[key] = value
    grid: list[list[str]] = [[]]
    for key in sorted(axes):
        grid = [[*g, f"{key}={v}"] for g in grid for v in str(axes[key]).split(",")]
    return [",".join(g) for g in grid]


def passed(run_dir: Path) -> bool:
    """Finished with the target's test rows (retrieval targets: their test rows too)."""
    path = run_dir / "results.jsonl"
    if not path.is_file():
        return False
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return any(r.get("stage") == "target" and r.get("split") == "test" for r in rows)


def table(jobs: list[Job], sweep_dir: Path) -> list[dict]:
    def mib(job: Job, rank: int) -> int | None:
        return round(job.peak[rank] / 2**20) if rank in job.peak else None

    return [
        {
            "job": j.name,
            "passed": passed(sweep_dir / j.name),
            "wall_s": round(j.wall_s, 1),
            "launches": j.launches,
            "interrupted": j.interrupted,
            "peak_rss_rank0_mib": mib(j, 0),
            "peak_rss_rank1_mib": mib(j, 1),
        }
        for j in jobs
    ]


def markdown(rows: list[dict], header: list[str]) -> str:
    cols = ["job", "passed", "wall_s", "launches", "peak_rss_rank0_mib", "peak_rss_rank1_mib", "interrupted"]
    lines = [*header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.rehearsal", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=PROJECT_ROOT / "multirun" / "rehearsal-work",
        help="work folder: data links, cache, the sweep, logs (default: %(default)s)",
    )
    parser.add_argument("--shared", type=Path, default=PROJECT_ROOT.parent / "shared" / "data")
    parser.add_argument("--cache", type=Path, default=None, help="data.cache_dir (default: OUT/cache)")
    parser.add_argument("--no-faults", action="store_true", help="no SIGTERM: one launch")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="where the table goes")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides narrowing the sweep")
    args = parser.parse_args(argv)
    shared = args.shared if args.shared.is_dir() else Path(os.environ.get("XLT_DATA_DIR", args.shared))
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data" if (out / "data").is_dir() else build_data(out, shared)
    sweep_dir = out / "sweep"
    command = [sys.executable, "-m", "xlt.train", "-m", "+sweep=rehearsal", f"data.dir={data}"]
    command += [
        f"data.cache_dir={args.cache or out / 'cache'}",
        f"hydra.sweep.dir={sweep_dir}",
        *args.overrides,
    ]
    expected = sweep_jobs(args.overrides)
    print(f"rehearsal: {len(expected)} jobs into {sweep_dir}; log {out / 'sweep.log'}", flush=True)
    # The driver itself may be stopped and rerun: what it measured so far is kept in OUT/jobs.json.
    state = out / "jobs.json"
    saved = (
        json.loads(state.read_text())
        if state.is_file()
        else {"began": time.time(), "launches": 0, "jobs": []}
    )
    jobs = {j["name"]: Job(**{**j, "peak": {int(r): v for r, v in j["peak"].items()}}) for j in saved["jobs"]}
    done = {name for name, job in jobs.items() if job.interrupted}  # a rerun driver signals no job twice
    faults = [] if args.no_faults else [f for f in FAULTS if f[0] in expected and f[0] not in done]
    began = saved["began"]
    problems: list[str] = []

    def report(final: bool) -> int:
        total = time.time() - began
        saved.update(launches=launches["n"], jobs=[dataclasses.asdict(j) for j in jobs.values()])
        state.write_text(json.dumps(saved) + "\n")
        if final:
            analysis = subprocess.run(
                [sys.executable, "-m", "xlt.results", str(sweep_dir)],
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
            )
            if analysis.returncode != 0:
                problems.append(
                    f"xlt.results ended with {analysis.returncode}: {analysis.stderr.strip()[-500:]}"
                )
        rows = table([jobs.get(name, Job(name)) for name in expected], sweep_dir)
        unfinished = [f"{r['job']}: no test rows" for r in rows if not r["passed"]]
        stamp = datetime.datetime.now(datetime.UTC)
        header = [
            f"# Rehearsal {stamp:%Y-%m-%d %H:%M} UTC: {len(rows)} jobs, {sum(r['passed'] for r in rows)} passed"
            + ("" if final else " (PARTIAL: still running)"),
            "",
            f"`python -m benchmarks.rehearsal {' '.join(args.overrides)}` on {os.cpu_count()} CPU cores"
            f" (shared with other sessions); {total / 60:.1f} min{'' if final else ' so far'} over"
            f" {launches['n']} launches, {sum(bool(j.interrupted) for j in jobs.values())} SIGTERMs. wall_s: the"
            " job's time in every launch that reached it (a finished job is skipped in seconds); peak RSS:"
            " VmHWM of each rank (MiB).",
        ]
        if problems or (final and unfinished):
            header += ["", "Problems:", *(f"- {p}" for p in problems + (unfinished if final else []))]
        text = markdown(rows, header)
        args.results.mkdir(parents=True, exist_ok=True)
        name = f"rehearsal-{stamp:%Y-%m-%d}"
        (args.results / f"{name}.md").write_text(text)
        summary = {"total_s": round(total, 1), "final": final, "problems": problems, "command": command}
        (args.results / f"{name}.json").write_text(json.dumps({**summary, "jobs": rows}, indent=1) + "\n")
        if final:
            print(text, flush=True)
        return 1 if problems or unfinished else 0

    launches = {"n": saved["launches"]}
    for fault in [*faults, None]:
        launches["n"] += 1
        status = launch(command, jobs, out / "sweep.log", fault, lambda: report(final=False))
        if fault is None:
            if status != 0:
                problems.append(f"the last launch ended with {status}")
            break
        marks = sorted(out.glob("fault-*.mark"), key=lambda p: p.stat().st_mtime)
        ended = time.time() - marks[-1].stat().st_mtime if marks else float("nan")
        what = f"{fault[1].rsplit(':', 1)[0]}: status {status}, every rank gone {ended:.0f} s after"
        jobs.setdefault(fault[0], Job(fault[0])).interrupted = what
        print(f"rehearsal: SIGTERM in {fault[0]} at {what}", flush=True)
        if status != 143 or not ended < 60:
            problems.append(f"{fault[0]}: SIGTERM at {fault[1]} ended with {status} after {ended:.0f} s")
            if status not in (0, 143):
                break  # a job failed: the relaunch would fail on it again
    return report(final=True)


if __name__ == "__main__":
    sys.exit(main())
