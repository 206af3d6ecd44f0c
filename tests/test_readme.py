"""Every command in the ```bash blocks of the README and of docs/*.md is run here, with the cheapest settings that keep it
honest; ``HOW`` says, per command, what is run and how it is shortened:

- ``as printed``: the command itself (plus ``hydra.run.dir``/``--out`` into a temporary folder and
  the session's ``data.cache_dir``, which change no result).
- ``capped``: the command plus example caps or ``debug=fdr`` (named in ``HOW``), because as printed it
  takes minutes to tens of minutes on a CPU; marked slow.
- ``plan``: commands that need the hub's XLM-R weights, MNLI and GPUs (no internet here): their
  overrides are composed and validated by ``python -m xlt.plan`` (the same config and schema as
  ``xlt.train``; nothing is launched), which fails on a misspelt group, key or value.
- ``make test`` is this suite itself and ``make install`` is what CI runs before it: not rerun.

The default suite runs the quick check, ``xlt.results``, the one-run plan and the composition of
the hub commands; the rest is marked slow (``make test-slow``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xlt import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
# The files whose commands are tested: the README and every page under docs/ (reference moved there).
DOC_FILES = [README, *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
FIXTURE = PROJECT_ROOT / "tests" / "fixtures" / "results" / "toy_sweep"
PLACEHOLDER_RUN = "outputs/2026-12-06/03-00-00"  # the run directory the evaluate/export examples name

QUICK = "python -m xlt.train +target=xnli target.train_task=snli target.train_split=dev debug=fdr model=tiny"
HUB = [
    "python -m xlt.train +intermediate=mnli +target=xnli model=xlmr_large",
    "python -m xlt.train +intermediate=anli +target=xnli model=xlmr_large",
    "python -m xlt.train +intermediate=all9 +target=xnli model=xlmr_large",
    "python -m xlt.train +target=xnli model=xlmr_large",
    "python -m xlt.train +target=tatoeba model=xlmr_base",
    "python -m xlt.train +target=bucc2018 model=xlmr_base data.source=local",
    # docs/mixtures.md
    "python -m xlt.train +intermediate=all9 +target=xnli intermediate.sampling.cap=20000 intermediate.sampling.temperature=2",
    "python -m xlt.train +intermediate=anli_rounds +target=xnli",
]
# The study's sweep on SLURM (README, docs/sweeps.md): every job composed and validated by `xlt.plan -m`.
SWEEP_PLAN = [
    "python -m xlt.train -m +sweep=scale_gap hydra/launcher=slurm",
    "python -m xlt.train -m +sweep=scale_gap target=xnli hydra/launcher=slurm",
]
OPTUNA = "python -m xlt.train -m +sweep=optuna_lr +target=xnli target.train_task=snli target.train_split=dev"
RESULTS = [
    "python -m xlt.results multirun/demo_scale_gap --x params_non_embedding",
    "python -m xlt.results multirun/scale_gap",
]
SWEEP_CAPS = ["target.max_train_examples=32", "target.max_eval_examples=16", "intermediate.max_train_examples=32",
              "intermediate.max_eval_examples=16"]  # fmt: skip
CAPS = ["target.max_train_examples=64", "target.max_eval_examples=32", "target.epochs=1"]
HOW: dict[str, str] = {
    "make demo": "capped: its command (conf/demo/cpu.yaml) with debug=limit (5 train batches a stage)",
    "make test": "not rerun: this suite",
    "make install": "not rerun: CI runs it before the suite",
    "python -m xlt.train -m +sweep=demo_scale_gap hydra/launcher=local_parallel": "capped: seed=1 (4 jobs), 32 training and 16 evaluation examples per stage",
    **{cmd: "as printed, on the toy-sweep fixture copied to the sweep directory it names" for cmd in RESULTS},
    **{cmd: "plan -m: every job composed and validated; slow (486 jobs)" for cmd in SWEEP_PLAN},
    QUICK: "as printed",
    "python -m xlt.tasks": "as printed",
    OPTUNA: "capped: model=tiny debug=fdr hydra.sweeper.n_trials=2 (needs '.[optuna]'); slow",
    "python -m xlt.train +target=xnli target.train_task=snli target.train_split=dev": "capped: " + " ".join(CAPS),
    "python -m xlt.train +target=tatoeba": "capped: target.max_eval_examples=32",
    **{cmd: "plan" for cmd in HUB},
    f"python -m xlt.evaluate {PLACEHOLDER_RUN} --out outputs/eval-xnli": "as printed, with the capped XNLI run as the run dir",
    f"python -m xlt.export {PLACEHOLDER_RUN} --out exported/xnli": "as printed, with the capped XNLI run as the run dir",
    "python -m xlt.plan +intermediate=mnli +target=xnli model=xlmr_large scale=xlmr_large": "as printed",
    "python -m xlt.plan -m +sweep=scale_gap --gpu a100 --mfu 0.35": "as printed; slow (2-3 min for 486 jobs)",
}  # fmt: skip


def readme_commands() -> list[str]:
    """Each command line of the ```bash blocks of the README and docs/*.md, its trailing comment dropped."""
    commands = []
    text = "\n".join(path.read_text() for path in DOC_FILES)
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(" ".join(words))
    return commands


def test_every_readme_command_has_a_test() -> None:
    commands = readme_commands()
    assert set(commands) == set(HOW), (
        f"README/docs commands without a test here: {sorted(set(commands) - set(HOW))}; "
        f"tested but no longer in the README: {sorted(set(HOW) - set(commands))}"
    )


def sh(
    command: str, *extra: str, cwd: Path = PROJECT_ROOT, timeout: int = 1200
) -> subprocess.CompletedProcess:
    words = shlex.split(command)
    assert words[:2] == ["python", "-m"], command
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT), "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, *words[1:], *extra], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, f"{command} {' '.join(extra)}\n{proc.stderr[-3000:]}"
    return proc


def test_quick_check_runs_as_printed(data_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    proc = sh(QUICK, f"hydra.run.dir={tmp_path / 'run'}", f"data.cache_dir={cache_dir}")
    assert "target / xnli / test" in proc.stdout
    assert (tmp_path / "run" / "results.jsonl").is_file()
    # A quiet terminal: stage start/end lines, the progress bar and the tables; the rest goes to the
    # run's log file (xlt/utils/console.py).
    terminal = proc.stdout + proc.stderr
    for noise in ("Tip:", "GPU available", "LeafSpec", "Saving the dataset", "anonymous", "wandb: ",
                  "Contamination audit", "Seed set", "Trainable params", "log_every_n_steps"):  # fmt: skip
        assert noise not in terminal, noise
    assert terminal.count("xnli/test/ar:") == 1  # the skipped languages, listed once (in the report)
    log_file = (tmp_path / "run" / "train.log").read_text()
    assert "GPU available" in log_file and "Contamination audit" in log_file and "xnli/test/ar:" in log_file
    assert terminal.count("target: training xnli") == 1 and terminal.count("target: xnli done") == 1
    # The no-data heading lists languages without data only; debug=fdr's unwritten prediction files
    # (one batch scored) have their own heading.
    no_data = terminal.split("Skipped (no data):\n", 1)[1].split("\n\n", 1)[0]
    assert "xnli/test/ar:" in no_data and "predictions" not in no_data
    assert "Prediction files not written:\n  predictions xnli/test-" in terminal
    # n_examples: what was scored (one batch of dev and of each test language), not the set's size.
    from omegaconf import OmegaConf

    from xlt.results.rows import read_results

    batch = OmegaConf.load(tmp_path / "run" / "config.yaml").target.eval_batch_size
    rows = [r for r in read_results(tmp_path / "run" / "results.jsonl") if r["stage"] == "target"
            and r["language"] == "en" and r["n_examples"] is not None]  # fmt: skip
    assert {r["split"] for r in rows} == {"dev", "test", "dev_heldout"}
    assert all(r["n_examples"] == batch for r in rows), [(r["split"], r["n_examples"], batch) for r in rows]


def test_the_old_quick_check_names_the_override_that_works(compose_cfg, data_dir: Path) -> None:
    """Without MNLI's train split (offline), the error names the override the quick check now uses."""
    from xlt.config import validate
    from xlt.tasks.loading import DataError, check_local_files

    cfg = validate(compose_cfg("+target=xnli", "debug=fdr", "model=tiny"))
    if (data_dir / "mnli" / "multinli_1.0" / "multinli_1.0_train.jsonl").exists():
        pytest.skip("MNLI's train split is present here")
    with pytest.raises(DataError) as err:
        check_local_files(cfg)
    message = str(err.value)
    assert "\n" not in message and message.startswith("mnli/train/en: no file under")
    assert "found here: target.train_task=snli target.train_split=dev" in message
    assert "target.train_task=snli target.train_split=dev" in QUICK


@pytest.mark.parametrize("command", RESULTS)
def test_results_command_as_printed(command: str, monkeypatch, tmp_path: Path, capsys) -> None:
    from xlt.results.__main__ import main

    sweep = shlex.split(command)[3]
    shutil.copytree(FIXTURE, tmp_path / sweep)
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(command)[3:]) == 0
    out = capsys.readouterr().out
    assert "gap" in out and "small" in out and "big" in out
    assert any((tmp_path / sweep).rglob("*.png"))


def test_tasks_command_as_printed(capsys) -> None:
    from xlt.tasks.__main__ import main

    assert main(shlex.split("python -m xlt.tasks")[3:]) == 0
    out = capsys.readouterr().out
    assert "xnli" in out and "test languages here" in out


def test_tasks_without_data_names_its_own_option(monkeypatch, capsys) -> None:
    """xlt.tasks reads no Hydra overrides: without data it names --data-dir, not data.dir."""
    from xlt.tasks import loading
    from xlt.tasks.__main__ import main

    monkeypatch.setattr(loading, "default_data_dir", lambda: None)
    monkeypatch.delenv("XLT_DATA_DIR", raising=False)
    main([])
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "data directory: (none found: pass --data-dir or set XLT_DATA_DIR)"


def test_one_run_plan_as_printed(capsys) -> None:
    from xlt.plan.cli import main

    assert main(shlex.split("+intermediate=mnli +target=xnli model=xlmr_large scale=xlmr_large")) == 0
    assert "GPU-hours" in capsys.readouterr().out


def plan_numbers(out: str) -> dict[str, str]:
    """GPU-hours, hours on the profile's GPUs, their count and peak GB per GPU, as xlt.plan prints them."""
    hours = re.search(r"= ([\d.e+-]+) GPU-hours on .*? \(([\d.e+-]+) h on (\d+) GPU\(s\)\)", out)
    peak = re.search(r"peak ([\d.]+) GB of", out)
    assert hours and peak, out[-2000:]
    return {"gpu_h": hours.group(1), "h": hours.group(2), "gpus": hours.group(3), "gb": peak.group(1)}


def test_readme_plan_numbers_are_what_xlt_plan_prints(capsys) -> None:
    """The README's one-job numbers (GPU-hours, hours on its GPUs, GB per GPU) against xlt.plan's output."""
    from xlt.plan.cli import main

    text = README.read_text()
    said = re.search(r"`\+intermediate=mnli \+target=xnli model=xlmr_large`: ([\d.]+) GPU-hours \(([\d.]+) h "
                     r"on its (\d+) GPUs\), ([\d.]+) GB a GPU", " ".join(text.split()))  # fmt: skip
    assert said, "README: the one-job plan sentence changed; update this test"
    assert main(shlex.split("+intermediate=mnli +target=xnli model=xlmr_large")) == 0
    got = plan_numbers(capsys.readouterr().out)
    assert said.groups()[:3] == (got["gpu_h"], got["h"], got["gpus"]), (said.groups(), got)
    assert said.group(4) == f"{float(got['gb']):.1f}", (said.groups(), got)  # its table's rounding
    # The table's one-GPU cell of the XNLI command.
    row = re.search(r"^\| XNLI on SNLI's .*\| ([\d.e-]+) GPU-h \|$", text, flags=re.M)
    assert row, "README: the XNLI row's GPU-h cell changed; update this test"
    assert main(shlex.split("+target=xnli target.train_task=snli target.train_split=dev")) == 0
    assert plan_numbers(capsys.readouterr().out)["gpu_h"] == row.group(1)


def test_times_agree_everywhere() -> None:
    """README, `xlt-train --help` (conf/train.yaml) and `make help` give make demo's and the quick
    check's time in the same words (they disagreed: "1 min", "~20 min", "< 20 min")."""
    demo = "3-14 min on 2 CPU cores"
    readme, train_help, makefile = (
        (PROJECT_ROOT / name).read_text() for name in ("README.md", "conf/train.yaml", "Makefile")
    )
    assert f"make demo   # the whole pipeline on real data, offline: {demo}" in readme
    assert f"+demo=cpu   # make demo, {demo}" in train_help
    assert re.search(rf"^## The main job .*: {demo} \(README\)\.$", makefile, flags=re.M)
    quick = re.search(r"debug=fdr model=tiny  # (.+) \(README\)$", train_help, flags=re.M)
    row = re.search(r"^\| quick check: .*$", readme, flags=re.M)
    assert quick and row and quick.group(1) in row.group(0), (quick, row)
    for text in (train_help, makefile):
        lines = [line for line in text.splitlines() if "demo" in line or "debug=fdr" in line]
        assert not re.search(r"(~|< ?)\d+ min|\b1 min, CPU", "\n".join(lines)), "an old time claim"


def test_make_help_prints_every_line_of_each_comment() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not installed")
    out = subprocess.run(
        [make, "-s", "help"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    ).stdout
    comments = re.findall(r"((?:^## .*\n)+)[a-z-]+:", (PROJECT_ROOT / "Makefile").read_text(), flags=re.M)
    assert comments
    for block in comments:
        for line in block.splitlines():
            assert line[3:] in out, line


@pytest.mark.parametrize("command", HUB)
def test_hub_commands_compose_and_validate(command: str, capsys) -> None:
    """Their overrides go through xlt.train's config and schema (via xlt.plan, which launches nothing)."""
    from xlt.plan.cli import main

    assert main(shlex.split(command)[3:]) == 0
    assert "GPU-hours" in capsys.readouterr().out


def test_plan_rejects_a_misspelt_group(capsys) -> None:
    """The composition check above can fail."""
    from xlt.plan.cli import main

    try:
        code = main(["+intermediate=mnlii", "+target=xnli"])
    except SystemExit as stop:
        code = stop.code
    assert code not in (0, None)


@pytest.mark.slow
def test_sweep_plan_as_printed(capsys) -> None:
    from xlt.plan.cli import main

    assert main(shlex.split("-m +sweep=scale_gap --gpu a100 --mfu 0.35")) == 0
    assert "486 job(s)" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("command", SWEEP_PLAN)
def test_slurm_sweep_commands_compose_and_validate(command: str, capsys) -> None:
    from xlt.plan.cli import main

    assert main(shlex.split(command)[3:]) == 0
    assert "job(s)" in capsys.readouterr().out


def require_optuna() -> None:
    """Skip without the Optuna extra, but fail under CI=true (CI installs it: the `dev` extra)."""
    try:
        import hydra_plugins.hydra_optuna_sweeper  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but the Optuna sweeper is not installed: pip install -e '.[dev]'")
        pytest.skip("pip install -e '.[optuna]'")


def test_optuna_missing_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_optuna_sweeper", None)  # import fails
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_optuna()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require_optuna()


@pytest.mark.slow
def test_optuna_sweep_capped(data_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    require_optuna()
    sh(OPTUNA, "model=tiny", "debug=fdr", "logger=none", "hydra.sweeper.n_trials=2",
       f"hydra.sweep.dir={tmp_path / 'opt'}", f"data.cache_dir={cache_dir}")  # fmt: skip
    from omegaconf import OmegaConf

    best = OmegaConf.load(tmp_path / "opt" / "optimization_results.yaml")
    assert set(best.best_params) == {"target.lr", "target.batch_size"} and best.best_value > 0
    assert len(list((tmp_path / "opt").rglob("results.jsonl"))) == 2


@pytest.mark.slow
def test_make_demo_capped(data_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    demo = re.search(r"^demo:.*\n\t\$\(PY\) (-m xlt\.train .*)$", makefile, flags=re.M)
    assert demo, "Makefile's demo target changed: update this test"
    proc = sh("python " + demo.group(1), "debug=limit", f"hydra.run.dir={tmp_path / 'run'}",
              f"data.cache_dir={cache_dir}")  # fmt: skip
    assert "target / xnli / test" in proc.stdout


@pytest.mark.slow
def test_offline_training_commands_capped_then_evaluate_and_export(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    cache = f"data.cache_dir={cache_dir}"
    run_dir = tmp_path / "xnli"
    sh("python -m xlt.train +target=xnli target.train_task=snli target.train_split=dev", *CAPS,
       f"hydra.run.dir={run_dir}", cache, "logger=csv")  # fmt: skip
    sh("python -m xlt.train +target=tatoeba", "target.max_eval_examples=32", f"hydra.run.dir={tmp_path / 'tat'}",
       cache, "logger=csv")  # fmt: skip
    # The evaluate/export examples as printed, in a folder where their run directory is the XNLI run.
    (tmp_path / PLACEHOLDER_RUN).parent.mkdir(parents=True)
    (tmp_path / PLACEHOLDER_RUN).symlink_to(run_dir)
    for command in HOW:
        if command.startswith(("python -m xlt.evaluate", "python -m xlt.export")):
            sh(command, *(["logger.kind=none", cache] if "evaluate" in command else []), cwd=tmp_path)
    assert (tmp_path / "outputs" / "eval-xnli" / "results.jsonl").is_file()
    assert (tmp_path / "exported" / "xnli" / "config.json").is_file()


@pytest.mark.slow
def test_demo_sweep_capped_then_results(data_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "multirun" / "demo_scale_gap"
    # Caps, not debug=fdr: xlt.results leaves debug runs out.
    sh("python -m xlt.train -m +sweep=demo_scale_gap hydra/launcher=local_parallel", *SWEEP_CAPS, "seed=1",
       f"hydra.sweep.dir={sweep_dir}", f"data.cache_dir={cache_dir}", timeout=2400)  # fmt: skip
    assert len(list(sweep_dir.rglob("results.jsonl"))) == 4
    sh("python -m xlt.results multirun/demo_scale_gap --x params_non_embedding", cwd=tmp_path)


def test_readme_commands_as_console_scripts(monkeypatch, tmp_path: Path) -> None:
    """The README says each command is also a console script: xlt-tasks and xlt-results run as
    printed, the installed scripts in a subprocess (this checkout through PYTHONPATH)."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "xlt-tasks").exists():
        pytest.skip(f"console scripts not installed in {bin_dir}")
    shutil.copytree(FIXTURE, tmp_path / "multirun" / "demo_scale_gap")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    for command in ("python -m xlt.tasks", RESULTS[0]):
        script = "xlt-" + shlex.split(command)[2].split(".")[1]
        argv = [str(bin_dir / script), *shlex.split(command)[3:]]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{argv}\n{proc.stderr[-2000:]}"
        assert ("test languages here" if script == "xlt-tasks" else "gap") in proc.stdout, proc.stdout[-2000:]


def test_console_scripts_point_at_the_entry_points() -> None:
    """pyproject's [project.scripts] (xlt-train, xlt-evaluate, ...) each name a callable main, and every
    ``python -m xlt.X`` the README shows has its script."""
    import importlib
    import tomllib

    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name
    modules = {shlex.split(c)[2] for c in readme_commands() if c.startswith("python -m ")}
    assert {f"xlt-{m.split('.')[1]}" for m in modules} <= set(scripts)


def test_readme_first_screen_and_links() -> None:
    """What, why and how before line 80; every relative link of the README and docs/ resolves."""
    lines = README.read_text().splitlines()
    assert len(lines) < 80, f"README.md has {len(lines)} lines: move reference material to docs/"
    first = "\n".join(lines[:80])
    for must in ("What it answers", "Why", "How", "make demo", "make test", "xlt.plan"):
        assert must in first, must
    for path in [*DOC_FILES, PROJECT_ROOT / "benchmarks" / "HISTORY.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)\)", path.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (path.parent / target).exists(), (
                    f"{path.relative_to(PROJECT_ROOT)}: broken link {target}"
                )
