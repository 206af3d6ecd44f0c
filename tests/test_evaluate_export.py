"""A trained tiny run is evaluated from its checkpoint with the same numbers, exported as a Hugging
Face directory, and the exported directory evaluates to the same numbers again (real local data)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xlt import PROJECT_ROOT

TRAIN = [
    "+target=xnli", "model=tiny", "logger=none", "target.train_task=snli", "target.train_split=dev",
    "target.languages=[en,de,sw]", "target.max_train_examples=96", "target.max_eval_examples=48",
    "target.epochs=1", "target.batch_size=16", "target.lr=0.003", "trainer.enable_progress_bar=false",
]  # fmt: skip


def run(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run([sys.executable, "-m", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=900, umask=0o002)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def target_rows(run_dir: Path) -> dict[tuple, float]:
    from xlt.results.rows import read_results

    return {(r["split"], r["language"], r["metric"]): r["value"] for r in read_results(run_dir / "results.jsonl")
            if r["stage"] == "target"}  # fmt: skip


def predictions(run_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((run_dir / "predictions" / "xnli").iterdir())}


@pytest.mark.slow
def test_evaluate_checkpoint_export_and_evaluate_export(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    cache = f"data.cache_dir={cache_dir}"
    train_dir, eval_dir, export_dir, eval2_dir = (tmp_path / n for n in ("train", "eval", "export", "eval2"))
    run("xlt.train", *TRAIN, cache, f"hydra.run.dir={train_dir}", cache=cache_dir)
    trained = target_rows(train_dir)
    assert {("test", "en", "acc"), ("test", "gap", "acc"), ("dev", "en", "acc")} <= set(trained)
    # Written under umask 002: group-writable like any file the user makes.
    assert stat.S_IMODE((train_dir / "results.jsonl").stat().st_mode) == 0o664

    proc = run(
        "xlt.evaluate", str(train_dir), "--out", str(eval_dir), "logger.kind=none", cache, cache=cache_dir
    )
    assert "target: evaluating xnli" in proc.stdout + proc.stderr  # it evaluates; it does not say "training"
    assert "training" not in proc.stdout + proc.stderr
    assert target_rows(eval_dir) == trained
    assert predictions(eval_dir) == predictions(train_dir)
    state = json.loads((eval_dir / "state.json").read_text())
    assert state["finished"] and state["evaluated_from"] == str(train_dir.resolve())
    # an evaluation-only plan ran: no stage was faked as trained (issue 26)
    assert "target" not in state.get("stages", {})

    run("xlt.export", str(train_dir), "--out", str(export_dir), cache=cache_dir)
    card = (export_dir / "README.md").read_text()
    assert "xnli" in card and "gap" in card and "max_train_examples: 96" in card

    # The exported directory is a Hugging Face model: AutoModel loads the encoder with the trained weights.
    from transformers import AutoModel, AutoModelForSequenceClassification

    ckpt = torch.load(
        train_dir / "checkpoints" / "target" / "best.ckpt", map_location="cpu", weights_only=True
    )
    trained_encoder = {
        k[len("encoder.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("encoder.")
    }
    encoder = AutoModel.from_pretrained(export_dir, add_pooling_layer=False)
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, trained_encoder[name]), name
    classifier = AutoModelForSequenceClassification.from_pretrained(export_dir)
    assert classifier.config.id2label[0] in ("entailment", "neutral", "contradiction")
    head = {k[len("heads.xnli.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("heads.xnli.")}
    assert torch.equal(classifier.classifier.out_proj.weight, head["out_proj.weight"])

    run("xlt.evaluate", str(export_dir), "--out", str(eval2_dir), "logger.kind=none", cache, cache=cache_dir)
    assert target_rows(eval2_dir) == trained
    assert predictions(eval2_dir) == predictions(train_dir)
    assert not (eval2_dir / "checkpoints" / "target" / "exported.ckpt").exists()


def test_evaluate_refuses_what_is_not_a_run(tmp_path: Path, capsys) -> None:
    from xlt.evaluate import main

    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing" in err[0]
    (tmp_path / "run").mkdir()
    assert main([str(tmp_path / "run")]) == 2
    assert "no config.yaml" in capsys.readouterr().err
