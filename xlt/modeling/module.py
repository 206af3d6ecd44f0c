"""The LightningModule: one encoder, one task head, per-(split, language) metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import nn

from xlt.data.datamodule import EvalSet
from xlt.modeling.heads import Head, PredictionCollector

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias", "norm.weight")


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    """Multiplier for the learning rate: 0 -> 1 over ``warmup`` steps, then linearly to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


class TransferModule(pl.LightningModule):
    """Encoder + head for one stage. The encoder object is shared across stages, so its weights
    carry over from the intermediate task to the target while the intermediate head is dropped."""

    def __init__(
        self,
        encoder: nn.Module,
        head: Head,
        task: str,
        lr: float,
        optim: DictConfig,
        val_sets: Sequence[EvalSet],
        test_sets: Sequence[EvalSet],
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.task = task
        self.lr = lr
        self.optim = optim
        self.val_keys = [s.key for s in val_sets]
        self.test_keys = [s.key for s in test_sets]
        # One metric set per evaluation dataloader (keys like "dev/xnli/en"; ModuleDict keys may not
        # contain dots or slashes). Heads that score whole examples (QA, tagging) read the eval set.
        self.metrics = nn.ModuleDict(
            {
                self._mkey(s.key): nn.ModuleDict(head.build_metrics(head.spec, s))
                for s in [*val_sets, *test_sets]
            }
        )
        self.scores: dict[str, dict[str, float]] = {}
        # Test predictions per eval-set key (example index -> prediction), when collect_predictions().
        self.collectors = nn.ModuleDict()
        self.predictions: dict[str, dict[int, Any]] = {}
        self._test_sets = {s.key: s for s in test_sets}

    def collect_predictions(self) -> None:
        """Keep every test example's prediction (gathered across ranks) in ``self.predictions``."""
        self.collectors = nn.ModuleDict({self._mkey(k): PredictionCollector() for k in self.test_keys})

    @staticmethod
    def _mkey(key: str) -> str:
        return key.replace("/", "__").replace(".", "_")

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        # Multiple choice is (batch, choices, seq): encode every choice; the head regroups them.
        if input_ids.dim() == 3:
            input_ids, attention_mask = input_ids.flatten(0, 1), attention_mask.flatten(0, 1)
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self.head(out.last_hidden_state, batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = self.head.loss(logits, batch)
        self.log(f"train/{self.task}/loss", loss, prog_bar=True, batch_size=batch["input_ids"].size(0))
        return loss

    def _eval_step(self, keys: list[str], batch: dict[str, torch.Tensor], dataloader_idx: int) -> None:
        logits = self(batch)
        mkey = self._mkey(keys[dataloader_idx])
        self.head.update_metrics(cast(nn.ModuleDict, self.metrics[mkey]), logits, batch)
        if keys is self.test_keys and mkey in self.collectors:
            self.collectors[mkey].update(*self.head.prediction_rows(logits, batch))

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_step(self.val_keys, batch, dataloader_idx)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(self.test_keys, batch, dataloader_idx)

    def _eval_epoch_end(self, keys: list[str]) -> None:
        for key in keys:
            metrics = self.metrics[self._mkey(key)]
            values = {}
            for name, metric in metrics.items():
                if getattr(metric, "update_count", 1) == 0 and not getattr(metric, "_update_called", True):
                    continue
                result = metric.compute()
                # A metric may report several names at once ({"em": ..., "f1": ...}): flatten them.
                values.update(
                    {k: float(v) for k, v in result.items()}
                    if isinstance(result, dict)
                    else {name: float(result)}
                )
                metric.reset()
            self.scores[key] = values
            # Keys read like test/xnli/de/acc (the split first, as W&B groups panels by prefix).
            self.log_dict({f"{key}/{name}": v for name, v in values.items()}, add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end(self.val_keys)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end(self.test_keys)
        for key in self.test_keys:
            if self._mkey(key) not in self.collectors:
                continue
            collector = self.collectors[self._mkey(key)]
            example_idx, rows = collector.compute()
            self.predictions[key] = self.head.decode_predictions(example_idx, rows, self._test_sets[key])
            collector.reset()

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if any(tag in name for tag in NO_DECAY) else decay).append(param)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.optim.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.lr,
            eps=self.optim.adam_epsilon,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.optim.warmup_ratio * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: linear_warmup_decay(step, warmup, total)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
