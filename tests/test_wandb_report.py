"""``python -m xlt.results <sweep> --wandb``: the sweep's tables and plots in one W&B run of the
sweep's project and group, offline (WANDB_MODE=offline), read back from the files wandb wrote; a
rerun logs to the same run id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from xlt import PROJECT_ROOT
from xlt.results.__main__ import main

FIXTURE = PROJECT_ROOT / "tests" / "fixtures" / "results" / "toy_sweep"


def test_tables_and_plots_logged_to_the_sweeps_group(tmp_path: Path, monkeypatch, capsys) -> None:
    sweep = tmp_path / "multirun" / "toy"
    shutil.copytree(FIXTURE, sweep)
    job = next(p for p in sweep.iterdir() if p.is_dir())
    (job / "config.yaml").write_text(
        "logger:\n  kind: wandb\n  project: xlt-test\n  group: toy_study\n  mode: auto\n"
    )
    for key, sub in (("WANDB_DIR", "wandb"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache")):
        monkeypatch.setenv(key, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)

    assert main(["multirun/toy", "--wandb"]) == 0
    assert main(["multirun/toy", "--wandb"]) == 0  # a rerun: the same run, updated
    out = capsys.readouterr().out
    runs = sorted((sweep / "analysis" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({r.name.split("-", 3)[-1] for r in runs}) == 1, runs  # one run id
    assert out.count("in group toy_study (project xlt-test)") == 2

    files = runs[-1] / "files" / "media"
    tables = {p.name.rsplit("_", 2)[0]: p for p in (files / "table" / "tables").glob("*.table.json")}
    assert {"gap_by_size", "intermediate_effect", "runs"} <= set(tables)
    logged = json.loads(tables["gap_by_size"].read_text())
    written = pd.read_csv(sweep / "analysis" / "gap_by_size.csv")
    assert logged["columns"] == list(written.columns) and len(logged["data"]) == len(written)
    plots = {p.name.split("_0_")[0] for p in (files / "images" / "plots").glob("*.png")}
    assert {"gap_vs_size_xnli_acc", "scores_vs_size_xnli_acc"} <= plots


@pytest.mark.slow
def test_the_sweep_end_callback_runs_the_report(tmp_path: Path, monkeypatch) -> None:
    from omegaconf import OmegaConf

    from xlt.results.wandb_report import ReportAtSweepEnd

    sweep = tmp_path / "multirun" / "toy"
    shutil.copytree(FIXTURE, sweep)
    for key, sub in (("WANDB_DIR", "wandb"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache")):
        monkeypatch.setenv(key, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))
    ReportAtSweepEnd().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert (sweep / "analysis" / "gap_by_size.csv").is_file()
    (run,) = (sweep / "analysis" / "wandb").glob("offline-run-*")
    assert any((run / "files" / "media" / "table" / "tables").glob("gap_by_size_*.table.json"))


def test_sweep_end_callback_reports_a_failure_and_passes_x(monkeypatch, capsys) -> None:
    import subprocess

    from omegaconf import OmegaConf

    from xlt.results.wandb_report import ReportAtSweepEnd

    seen: list[list[str]] = []

    def failing(argv, check=False):  # type: ignore[no-untyped-def]
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 1)

    monkeypatch.setattr(subprocess, "run", failing)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": "multirun/toy"}}})
    ReportAtSweepEnd(x="params_non_embedding").on_multirun_end(config)
    assert seen[0][1:] == ["-m", "xlt.results", "multirun/toy", "--wandb", "--x", "params_non_embedding"]
    err = capsys.readouterr().err.strip()
    assert err == ("xlt: the sweep's W&B report failed (exit 1); rerun: python -m xlt.results multirun/toy "
                   "--wandb --x params_non_embedding")  # fmt: skip


def test_analysis_run_id_is_the_set_of_sweep_dirs(tmp_path: Path) -> None:
    from xlt.results.wandb_report import analysis_run_id

    a, b = tmp_path / "a", tmp_path / "b"
    assert analysis_run_id("p", "g", [a, b]) == analysis_run_id("p", "g", [b, a])
    assert analysis_run_id("p", "g", [a]) != analysis_run_id("p", "g", [b])
    assert analysis_run_id("p", "g", [a]) != analysis_run_id("p", "h", [a])
