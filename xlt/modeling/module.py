"""The LightningModule: one encoder, its task heads (one, or several for a mixture stage), and
per-(split, language) metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

import pytorch_lightning as pl
import torch
from torch import nn

from xlt.data.datamodule import EvalSet, MixtureTrain
from xlt.metrics.keys import SELECTION, score_key, set_key
from xlt.modeling.heads import ExampleCounter, Head, PredictionCollector, build_head
from xlt.tasks.spec import TaskSpec
from xlt.training.strategies import clip_grad_norm


class OptimSettings(Protocol):
    """AdamW's settings as the run's plan gives them (xlt.orchestration.plan_sections.OptimPlan)."""

    @property
    def weight_decay(self) -> float: ...
    @property
    def warmup_ratio(self) -> float: ...
    @property
    def adam_epsilon(self) -> float: ...


NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias", "norm.weight")


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    """Multiplier for the learning rate: 0 -> 1 over ``warmup`` steps, then linearly to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


# Devices with a fused AdamW kernel in torch 2.13 (torch.utils._foreach_utils lists them privately).
_FUSED_ADAMW_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")


def adamw_implementation(params: Sequence[torch.Tensor]) -> dict[str, bool]:
    """``fused=True`` when every parameter is a plain floating-point tensor on a device with a fused
    AdamW kernel, else ``{}`` (torch's own choice: foreach on CUDA, e.g. for FSDP's DTensors).

    torch defaults to ``foreach`` only on CUDA; on CPU it takes the per-parameter Python loop
    (``_single_tensor_adam``), which cost a third of a CPU training step on e5_small (issue 15). The
    update is the same arithmetic; tests/test_perf_equivalence.py checks the parameters agree.
    """
    plain = all(
        type(p) in (torch.Tensor, nn.Parameter)
        and p.device.type in _FUSED_ADAMW_DEVICES
        and torch.is_floating_point(p)
        for p in params
    )
    return {"fused": True} if plain and params else {}


class TransferModule(pl.LightningModule):
    """Encoder + heads for one stage. The encoder object is shared across stages, so its weights
    carry over from the intermediate task to the target while the intermediate heads are dropped.

    ``task`` is the stage's task spec, or a mixture stage's name; ``train_tasks`` are a mixture's
    member specs. The module reads every task fact from these specs (an evaluation set's task must be
    one of them). ``heads`` maps a head name to its head; ``head_of`` maps a task name to its head's
    name (tasks may share a head). With one head every task uses it. Training batches of a mixture
    carry ``task_id``, an index into ``train_tasks``. ``selection``: the mean of these (eval key,
    metric) pairs is logged as ``{selection_key}`` after each validation (a mixture's model selection
    criterion). Result rows are built from ``scores``, ``parts`` and ``selection`` by
    :func:`xlt.results.rows.eval_rows`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        heads: Head | Mapping[str, Head],
        task: TaskSpec | str,
        lr: float,
        optim: OptimSettings,
        val_sets: Sequence[EvalSet],
        test_sets: Sequence[EvalSet],
        head_of: Mapping[str, str] | None = None,
        train_tasks: Sequence[TaskSpec] = (),
        selection: tuple[str, Sequence[tuple[str, str]]] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.task = task if isinstance(task, str) else task.name
        self.heads = nn.ModuleDict({self.task: heads} if isinstance(heads, Head) else dict(heads))
        self.head_of = dict(head_of or {})
        self.train_tasks = [t.name for t in train_tasks]
        self.specs = {t.name: t for t in ([] if isinstance(task, str) else [task]) + list(train_tasks)}
        self.selection = selection
        self.lr = lr
        self.optim = optim
        # Set by xlt.training.callbacks.DivergenceGuard before clipping, reused (and cleared) by the clipping below.
        self.unclipped_grad_norm: torch.Tensor | None = None
        self.val_keys = [s.key for s in val_sets]
        self.test_keys = [s.key for s in test_sets]
        self.key_task = {s.key: s.task for s in [*val_sets, *test_sets]}
        # Parts of a '+'-joined split (ANLI rounds): their whole split's score is the example-weighted
        # mean of theirs (exact for accuracy).
        self.parts: dict[str, list[tuple[str, int]]] = {}
        for s in val_sets:
            if s.part_of:
                self.parts.setdefault(s.overall_key, []).append((s.key, len(s)))
        # One metric set per evaluation dataloader (keys like "dev/xnli/en"; ModuleDict keys may not
        # contain dots or slashes). Heads that score whole examples (QA, tagging) read the eval set.
        self.metrics = nn.ModuleDict(
            {
                self._mkey(s.key): nn.ModuleDict(self.head_for(s.task).build_metrics(self.spec_of(s), s))
                for s in [*val_sets, *test_sets]
            }
        )
        self.scores: dict[str, dict[str, float]] = {}
        # Examples each evaluation set's last epoch scored (fewer than its size under debug=fdr/limit).
        self.counters = nn.ModuleDict({self._mkey(s.key): ExampleCounter() for s in [*val_sets, *test_sets]})
        self.scored: dict[str, int] = {}
        # Test predictions per eval-set key (example index -> prediction), when collect_predictions().
        self.collectors = nn.ModuleDict()
        self.predictions: dict[str, dict[int, Any]] = {}
        self._test_sets = {s.key: s for s in test_sets}

    @property
    def selection_key(self) -> str | None:
        """The key its selection score is kept under in ``scores`` (a mixture's), else None."""
        return self.selection[0] if self.selection is not None else None

    def collect_predictions(self) -> None:
        """Keep every test example's prediction (gathered across ranks) in ``self.predictions``."""
        self.collectors = nn.ModuleDict({self._mkey(k): PredictionCollector() for k in self.test_keys})

    @property
    def head(self) -> Head:
        """The stage's head when it has exactly one."""
        if len(self.heads) != 1:
            # Not AttributeError: nn.Module.__getattr__ would replace the message with "no attribute".
            raise RuntimeError(f"stage {self.task} has {len(self.heads)} heads; use head_for(task)")
        return cast(Head, next(iter(self.heads.values())))

    def spec_of(self, eval_set: EvalSet) -> TaskSpec:
        """The spec of an evaluation set's task: one of the stage's tasks."""
        try:
            return self.specs[eval_set.task]
        except KeyError:
            raise ValueError(
                f"evaluation set {eval_set.key}: task {eval_set.task} is not a task of stage {self.task} "
                f"({', '.join(self.specs) or 'none'})"
            ) from None

    def head_for(self, task: str) -> Head:
        name = self.head_of.get(task)
        if name is None:
            return self.head  # a single-head stage: the target's head also scores its training source
        return cast(Head, self.heads[name])

    @staticmethod
    def _mkey(key: str) -> str:
        return key.replace("/", "__").replace(".", "_")

    def forward(self, batch: dict[str, torch.Tensor], head: Head | None = None) -> torch.Tensor:
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        # Multiple choice is (batch, choices, seq): encode every choice; the head regroups them.
        if input_ids.dim() == 3:
            input_ids, attention_mask = input_ids.flatten(0, 1), attention_mask.flatten(0, 1)
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return (head if head is not None else self.head)(out.last_hidden_state, batch)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # A mixture batch's task, read while the batch is still on the host: int() of a GPU tensor in
        # training_step would wait for the device at every step.
        if isinstance(batch, dict) and isinstance(batch.get("task_id"), torch.Tensor):
            batch = {**batch, "task_id": int(batch["task_id"][0])}
        return batch

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        task_id = batch.pop("task_id", None)
        if task_id is None:
            task, head = self.task, self.head
        else:  # a mixture batch: one task per batch (MultiTaskBatchSampler)
            task = self.train_tasks[int(task_id if isinstance(task_id, int) else task_id[0])]
            head = self.head_for(task)
        logits = self(batch, head)
        loss = head.loss(logits, batch)
        # Not prog_bar=True: Lightning would read the value back after every step (a GPU sync); the
        # progress bar (xlt.training.callbacks.LossProgressBar) reads it when it redraws.
        self.log(f"train/{task}/loss", loss, batch_size=batch["input_ids"].size(0))
        return loss

    def _eval_step(self, keys: list[str], batch: dict[str, torch.Tensor], dataloader_idx: int) -> None:
        key = keys[dataloader_idx]
        head = self.head_for(self.key_task[key])
        logits = self(batch, head)
        mkey = self._mkey(key)
        head.update_metrics(cast(nn.ModuleDict, self.metrics[mkey]), logits, batch)
        self.counters[mkey].update(batch["example_idx"])
        if keys is self.test_keys and mkey in self.collectors:
            self.collectors[mkey].update(*head.prediction_rows(logits, batch))

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
            self.scored[key] = int(self.counters[self._mkey(key)].compute())
            self.counters[self._mkey(key)].reset()
            # Keys read like test/xnli/de/acc (the split first, as W&B groups panels by prefix).
            self.log_dict({score_key(key, name): v for name, v in values.items()}, add_dataloader_idx=False)

    def _combine_parts(self) -> None:
        for whole, parts in self.parts.items():
            total = sum(n for _, n in parts)
            names = set.intersection(*(set(self.scores.get(k, {})) for k, _ in parts))
            values = {m: sum(self.scores[k][m] * n for k, n in parts) / total for m in sorted(names)}
            self.scores[whole] = values
            self.log_dict({score_key(whole, name): v for name, v in values.items()}, add_dataloader_idx=False)
        if self.selection is not None:
            name, pairs = self.selection
            found = [self.scores[k][m] for k, m in pairs if m in self.scores.get(k, {})]
            if found:
                self.scores[name] = {SELECTION: sum(found) / len(found)}
                self.log(score_key(name, SELECTION), self.scores[name][SELECTION])

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end(self.val_keys)
        self._combine_parts()

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end(self.test_keys)
        for key in self.test_keys:
            if self._mkey(key) not in self.collectors:
                continue
            collector = self.collectors[self._mkey(key)]
            example_idx, rows = collector.compute()
            head = self.head_for(self.key_task[key])
            self.predictions[key] = head.decode_predictions(example_idx, rows, self._test_sets[key])
            collector.reset()

    def configure_gradient_clipping(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Norm clipping over the whole model also when FSDP shards it (xlt.training.strategies.clip_grad_norm);
        Lightning's own path raises under FSDP. Otherwise Lightning's clipping, unchanged."""
        wrapped = self.trainer.strategy.model
        norm, self.unclipped_grad_norm = self.unclipped_grad_norm, None
        norm_clip = (
            bool(gradient_clip_val) and gradient_clip_algorithm in (None, "norm") and wrapped is not None
        )
        if norm_clip:
            sharded_norm = clip_grad_norm(cast(nn.Module, wrapped), float(gradient_clip_val or 0))
            if sharded_norm is not None:  # FSDP: the norm over every rank's shards, the whole gradient's
                self._log_grad_norm(sharded_norm)
                return
        if norm_clip and not self._scaled():
            # torch's clip_grad_norm_ in two halves: the total norm (DivergenceGuard's of this step when
            # it took one: same gradients, same order, same function), then the scaling: what
            # Lightning's clip_gradients does without a GradScaler, except that under mixed precision
            # it refuses the fused optimizer. (Under a GradScaler: Lightning, which unscales first.)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if norm is None:
                norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            self._log_grad_norm(norm)
            torch.nn.utils.clip_grads_with_norm_(params, float(gradient_clip_val or 0), norm)
            return
        if norm is not None:  # no clipping, unsharded: DivergenceGuard's norm of the whole gradient
            self._log_grad_norm(norm)
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def _log_grad_norm(self, norm: torch.Tensor) -> None:
        """``train/grad_norm``: the whole gradient's norm before clipping, where a logger records it."""
        if getattr(self.trainer, "loggers", None):
            self.log("train/grad_norm", norm.detach(), on_step=True, on_epoch=False)

    def _scaled(self) -> bool:
        """Whether training runs under a GradScaler (precision 16-mixed)."""
        return getattr(getattr(self.trainer, "precision_plugin", None), "scaler", None) is not None

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
            # Under fp16's GradScaler torch's default: Lightning refuses to clip gradients for an
            # optimizer that unscales them itself, as the fused one does.
            **({} if self._scaled() else adamw_implementation([*decay, *no_decay])),
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.optim.warmup_ratio * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: linear_warmup_decay(step, warmup, total)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @classmethod
    def for_mixture(
        cls,
        encoder: nn.Module,
        mixture: MixtureTrain,
        lr: float,
        optim: OptimSettings,
        val_sets: Sequence[EvalSet],
        hidden_size: int,
        pooling: str,
    ) -> TransferModule:
        """A mixture stage's module: one fresh head per head name (shared by the tasks mapped to it),
        selected on the mean of the evaluated members' primary dev metrics."""
        specs = [mixture.specs[task] for task in mixture.tasks]
        heads: dict[str, Head] = {}
        for spec in specs:
            if mixture.head_of[spec.name] not in heads:
                heads[mixture.head_of[spec.name]] = build_head(spec, hidden_size, pooling)
        wholes = {s.overall_key: mixture.specs[s.task] for s in val_sets}
        pairs = [(key, spec.metrics[0]) for key, spec in wholes.items()]
        return cls(
            encoder,
            heads,
            mixture.name,
            lr,
            optim,
            val_sets,
            [],
            head_of=mixture.head_of,
            train_tasks=specs,
            selection=(set_key("dev", mixture.name, "en"), pairs),
        )
