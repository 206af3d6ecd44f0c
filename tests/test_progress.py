"""Progress off a terminal (xlt/training/progress.py): a real Lightning fit writes a start line, a time
estimate from the first steps, and a line per 25% with the rate and the time left."""

from __future__ import annotations

import io
import re

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from xlt.training.progress import LineProgress, duration, rate


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        (x,) = batch
        loss = self.layer(x).pow(2).mean()
        self.log("train/tiny/loss", loss)
        return loss

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_lines_per_quarter_with_rate_and_time_left(tmp_path) -> None:
    stream = io.StringIO()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[LineProgress("target", every_pct=25, every_s=3600, stream=stream)])  # fmt: skip
    loader = DataLoader(TensorDataset(torch.randn(40, 4)), batch_size=5)  # 8 steps an epoch
    trainer.fit(Tiny(), loader)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "target: 16 optimizer steps (2 epochs)"
    (estimate,) = [line for line in lines if "over the first" in line]
    assert re.fullmatch(
        r"target: .* over the first 3 steps: about \d+ s for the 13 left \(training only; "
        r"evaluation comes on top\)",
        estimate,
    ), estimate
    assert lines.index(estimate) == 2  # after the start line and step 1's
    steps = [line for line in lines if line.startswith("target: step ")]
    assert [re.search(r"step (\d+)/16 \((\d+)%\)", line).groups() for line in steps] == [  # type: ignore[union-attr]
        ("1", "6"), ("4", "25"), ("8", "50"), ("12", "75"), ("16", "100")]  # fmt: skip
    assert all("elapsed, about" in line and "left; loss " in line for line in steps), steps
    assert "\r" not in stream.getvalue()  # lines, not a redrawn bar


def test_gradient_accumulation_prints_each_step_once(tmp_path) -> None:
    """accumulate_grad_batches=4: four batches end at each optimizer step; one line, not four."""
    stream = io.StringIO()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_model_summary=False, default_root_dir=tmp_path, accumulate_grad_batches=4,
                         callbacks=[LineProgress("target", every_pct=25, every_s=0, stream=stream)])  # fmt: skip
    trainer.fit(Tiny(), DataLoader(TensorDataset(torch.randn(80, 4)), batch_size=5))  # 16 batches, 4 steps
    lines = stream.getvalue().splitlines()
    assert lines[0] == "target: 4 optimizer steps (1 epoch)"
    assert len([line for line in lines if "over the first 3 steps" in line]) == 1, lines
    steps = [re.search(r"step (\d+)/4", line).group(1) for line in lines if line.startswith("target: step ")]  # type: ignore[union-attr]
    assert steps == ["1", "2", "3", "4"], lines


def test_rates_read_without_exponents() -> None:
    assert [rate(s) for s in (118.4, 31.23, 1.0, 0.24, 0.004)] == [
        "118 s/step", "31.2 s/step", "1.0 s/step", "4.17 steps/s", "250 steps/s"]  # fmt: skip


def test_durations_read_as_words() -> None:
    assert [duration(s) for s in (42, 185, 19140)] == ["42 s", "3 min 5 s", "5 h 19 min"]


def test_learning_rate_and_gradient_norm_are_logged(tmp_path) -> None:
    """DivergenceGuard, which takes the norm every step anyway, logs it with the step's learning rate."""
    import csv

    from pytorch_lightning.loggers import CSVLogger

    from xlt.training.callbacks import DivergenceGuard

    torch.manual_seed(0)
    norms: list[float] = []

    class Recorded(Tiny):
        def on_before_optimizer_step(self, optimizer) -> None:  # type: ignore[no-untyped-def]
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            norms.append(float(torch.nn.utils.get_total_norm(grads)))

    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=CSVLogger(tmp_path), log_every_n_steps=1,
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                         callbacks=[DivergenceGuard("target")])  # fmt: skip
    trainer.fit(Recorded(), DataLoader(TensorDataset(torch.randn(20, 4)), batch_size=5))
    text = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()
    rows = [r for r in csv.DictReader(text) if r.get("train/grad_norm")]
    assert len(rows) == 4
    assert [float(r["train/lr"]) for r in rows] == pytest.approx([0.01] * 4)
    assert [float(r["train/grad_norm"]) for r in rows] == pytest.approx(norms)
