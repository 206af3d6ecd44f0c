"""Divergence stops the run: a non-finite gradient norm or loss ends training at that step, before
the update, with one line naming stage, step and batch; no results are written, the checkpoints on
disk stay the last good ones, and the command exits 3."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from xlt import PROJECT_ROOT
from xlt.orchestration.run import run
from xlt.results.rows import ResultRow, RunContext, write_results
from xlt.training.callbacks import Diverged, DivergenceGuard

TINY = (
    "model=tiny", "+target=xnli", "target.train_task=snli", "target.train_split=dev",
    "target.languages=[en,de]", "target.max_train_examples=64", "target.max_eval_examples=32",
    "scale.per_device_batch_size=8", "target.batch_size=8", "target.epochs=3",
    "scale.checkpoint_every_n_steps=2",
)  # fmt: skip


class _Linear(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.layer(batch.float().unsqueeze(1)).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_batch_stops_training_before_its_update(tmp_path: Path, bad: float) -> None:
    data = [1.0, 2.0, 3.0, bad, 5.0, 6.0]  # the 4th step's loss (and gradient) is not finite
    model = _Linear()
    before: dict[int, torch.Tensor] = {}

    class Snapshot(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            before[trainer.global_step] = pl_module.layer.weight.detach().clone()

    trainer = pl.Trainer(max_epochs=1, callbacks=[DivergenceGuard("target"), Snapshot()], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(Diverged, match=r"^target training diverged: the gradient norm is (nan|inf) at step 3 "
                       r"\(epoch 0, batch 3\)"):  # fmt: skip
        trainer.fit(model, train_dataloaders=DataLoader(data, batch_size=1))
    assert trainer.global_step == 3
    assert torch.equal(model.layer.weight, before[3]) and torch.isfinite(model.layer.weight).all()


def test_a_diverged_run_writes_no_results_and_keeps_its_good_checkpoints(
    compose_cfg, data_dir: Path, tmp_path: Path
) -> None:
    """The issue's example: target.lr=1e6 gave NaN losses, results of 33.33 and exit 0."""
    with pytest.raises(Diverged) as caught:
        run(compose_cfg(*TINY, "target.lr=1e6"), tmp_path)
    line = str(caught.value)
    assert "\n" not in line and line.startswith("target training diverged:") and "at step " in line
    assert not (tmp_path / "results.jsonl").exists() and not (tmp_path / "predictions").exists()
    state = json.loads((tmp_path / "state.json").read_text()) if (tmp_path / "state.json").exists() else {}
    assert not state.get("finished") and "target" not in state.get("stages", {})
    step = int(line.split("at step ")[1].split()[0])
    ckpts = list((tmp_path / "checkpoints" / "target").glob("*.ckpt"))
    if step > 2:  # a step checkpoint was written before the divergence: it is finite
        assert ckpts
    for path in ckpts:
        weights = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point()), path


@pytest.mark.slow
def test_the_command_exits_3_with_one_line_on_stderr(data_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "xlt.train", *TINY, "target.lr=1e6", "logger=none",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}", f"data.cache_dir={cache_dir}"]  # fmt: skip
    proc = subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("xlt: ")]
    assert len(lines) == 1 and "target training diverged" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "results.jsonl").exists()


def test_results_refuse_non_finite_values(tmp_path: Path) -> None:
    ctx = RunContext("tiny", 1, "none", "xnli", "snli", 1, "abc", "local")
    with pytest.raises(ValueError, match="not finite"):
        write_results(
            tmp_path / "results.jsonl", [ResultRow("target", "xnli", "test", "en", "acc", math.nan)], ctx
        )
    assert not (tmp_path / "results.jsonl").exists()
