"""Training throughput: xlt vs the HF Trainer vs a bare PyTorch loop, on the same model and data.

    python benchmarks/bench_training.py                     # 512 SNLI dev pairs, 2 repeats each
    python benchmarks/bench_training.py --examples 64 --repeats 1   # a quick check
    python benchmarks/bench_training.py --profile           # cProfile of one xlt epoch instead

Every trainer gets the same converted multilingual-e5-small (a deep copy of one loaded encoder; the HF
classifier loads the same directory), the same SNLI dev pairs tokenised by xlt's featuriser (truncated
to 128 tokens), batch 16, fp32, every weight trained, AdamW (lr 1e-5, weight decay 0.01 except biases
and LayerNorm weights, eps 1e-8), 10% linear warmup then linear decay, gradient clipping at 1.0,
dropout on, one epoch, no evaluation, no checkpoint, progress bars off, one process on the CPU:

- ``xlt``: xlt's own path: ``prepare_stage_data`` -> ``StageDataModule`` (length-grouped batches,
  dynamic padding) -> ``TransferModule`` -> the Lightning Trainer that ``xlt.training.trainer.build_trainer`` builds;
- ``bare``: a plain loop (forward, loss, backward, clip, AdamW step, scheduler step, zero_grad) over
  the very batches xlt's loader yields in that epoch, collated before the clock starts: the floor for
  any trainer of this model on these batches (framework overhead = xlt / bare per optimizer step);
- ``hf_fixed`` / ``hf_dynamic`` / ``hf_group_by_length``: ``transformers.Trainer`` with
  ``XLMRobertaForSequenceClassification`` on the same weights: every batch padded to 128 (as XTREME's
  scripts do), padded to its longest row (``DataCollatorWithPadding``), and ``train_sampling_strategy="group_by_length"`` (transformers 5's name for ``group_by_length=True``).
  The HF Trainer uses its default optimizer (fused AdamW with torch >= 2.8) and the same schedule.

The clock runs over the training epoch only (from the epoch-begin to the epoch-end hook; the bare loop
over its batches), so start-up and end-of-stage checkpoint writes are left out for every trainer alike.
Repeats alternate (repeat r runs every trainer before repeat r + 1 starts; the order rotates), so
background load hits all alike. Padding efficiency = real tokens / padded tokens of the batches the
trainer would draw in that epoch. ``padding_efficiency`` also measures xlt's training batches on real
UD-POS (English train) and SNLI dev at the targets' configured batch size (32).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRAINERS = ("xlt", "bare", "hf_group_by_length", "hf_dynamic", "hf_fixed")


def compose(*overrides: str) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from xlt.config import validate
    from xlt.schema import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return validate(hydra_compose("train", overrides=["logger=none", "trainer.enable_progress_bar=false",
                                                          *overrides]))  # fmt: skip


class Setup:
    """What every trainer shares: config, tokenizer, the loaded encoder, the featurised pairs."""

    def __init__(self, examples: int, batch_size: int, max_len: int, run_dir: Path) -> None:
        from xlt.data.datamodule import prepare_stage_data
        from xlt.orchestration.plan import build_plan
        from xlt.orchestration.session import RunSession
        from xlt.orchestration.stage import StageExecutor
        from xlt.tasks.registry import get_task

        self.cfg = compose(
            "+target=xnli", "target.train_task=snli", "target.train_split=dev",
            f"target.max_train_examples={examples}", f"target.batch_size={batch_size}",
            f"scale.per_device_batch_size={batch_size}", f"target.max_seq_length={max_len}",
            "target.epochs=1", "scale.precision=32-true", "trainer.accelerator=cpu",
            "model.freeze_embeddings=false", "predictions=false",
        )  # fmt: skip
        self.run_dir = run_dir
        plan = build_plan(self.cfg, run_dir)
        self.session = RunSession.open(plan)
        self.executor = StageExecutor(self.session)
        self.target_plan = plan.stage("target")
        self.spec = get_task("xnli")
        self.data = prepare_stage_data(
            task=self.spec, train_task=get_task("snli"), train_split="dev", dev_split=None, test_split=None,
            languages=[], settings=self.session.settings, max_len=max_len, max_train=examples, max_eval=None,
        )  # fmt: skip
        assert self.data.train is not None
        self.train = self.data.train
        self.batch_size = batch_size
        self.max_len = max_len
        self.examples = len(self.train)

    def module(self) -> Any:
        from xlt.modeling.heads import build_head
        from xlt.modeling.module import TransferModule

        encoder = copy.deepcopy(self.session.model.encoder)
        head = build_head(self.spec, encoder.config.hidden_size, self.cfg.model.pooling)
        return TransferModule(encoder, head, self.spec, self.cfg.target.lr, self.cfg.optim, [], [])

    def datamodule(self) -> Any:
        from xlt.data.datamodule import StageDataModule

        return StageDataModule(self.data, self.session.model.tokenizer, self.batch_size, 64, self.cfg.seed)


def efficiency(masks: list[torch.Tensor]) -> float:
    return sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)


def run_xlt(setup: Setup) -> dict[str, Any]:
    import pytorch_lightning as pl

    class EpochClock(pl.Callback):
        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.seconds = time.perf_counter() - self.start
            self.steps = trainer.global_step

    pl.seed_everything(setup.cfg.seed, workers=True, verbose=False)
    module, dm = setup.module(), setup.datamodule()
    masks = [b["attention_mask"] for b in dm.train_dataloader()]
    ckpt_dir = Path(tempfile.mkdtemp(dir=setup.run_dir, prefix="ckpt-"))
    trainer = setup.executor._trainer(setup.target_plan, setup.data, 1, ckpt_dir, None)
    clock = EpochClock()
    trainer.callbacks.append(clock)
    trainer.fit(module, datamodule=dm)
    return {"seconds": clock.seconds, "steps": clock.steps, "padding_efficiency": efficiency(masks)}


def run_bare(setup: Setup) -> dict[str, Any]:
    import pytorch_lightning as pl

    from xlt.modeling.module import NO_DECAY, adamw_implementation, linear_warmup_decay

    pl.seed_everything(setup.cfg.seed, workers=True, verbose=False)
    module = setup.module()
    batches = list(setup.datamodule().train_dataloader())
    decay = [p for n, p in module.named_parameters() if not any(t in n for t in NO_DECAY)]
    no_decay = [p for n, p in module.named_parameters() if any(t in n for t in NO_DECAY)]
    optim = setup.cfg.optim
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=setup.cfg.target.lr, eps=optim.adam_epsilon, **adamw_implementation([*decay, *no_decay]),
    )  # fmt: skip
    total = len(batches)
    warmup = int(optim.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: linear_warmup_decay(s, warmup, total))
    params = [*decay, *no_decay]
    module.train()
    start = time.perf_counter()
    for batch in batches:
        batch = dict(batch)
        loss = module.head.loss(module(batch), batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, optim.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    masks = [b["attention_mask"] for b in batches]
    return {"seconds": seconds, "steps": total, "padding_efficiency": efficiency(masks)}


def run_hf(setup: Setup, mode: str) -> dict[str, Any]:
    from transformers import (
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        XLMRobertaForSequenceClassification,
    )

    from xlt.modeling.encoder import _e5_dir

    class EpochClock(TrainerCallback):
        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.seconds = time.perf_counter() - self.start
            self.steps = state.global_step

    tokenizer = setup.session.model.tokenizer
    train = setup.train.select_columns(["input_ids", "attention_mask", "labels", "length"])
    if mode == "fixed":
        train = train.map(lambda b: tokenizer.pad(b, padding="max_length", max_length=setup.max_len),
                          batched=True, desc="padding to max_length")  # fmt: skip
    cfg = setup.cfg
    model = XLMRobertaForSequenceClassification.from_pretrained(
        _e5_dir(setup.session.settings.cache_dir), num_labels=3, dtype=torch.float32
    )
    args = TrainingArguments(
        output_dir=str(setup.run_dir / f"hf-{mode}"),
        per_device_train_batch_size=setup.batch_size,
        num_train_epochs=1,
        learning_rate=cfg.target.lr,
        weight_decay=cfg.optim.weight_decay,
        adam_epsilon=cfg.optim.adam_epsilon,
        warmup_steps=cfg.optim.warmup_ratio,  # a float < 1 is a fraction of the steps (transformers 5)
        lr_scheduler_type="linear",
        max_grad_norm=cfg.optim.max_grad_norm,
        train_sampling_strategy="group_by_length" if mode == "group_by_length" else "random",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        logging_steps=cfg.trainer.log_every_n_steps,
        disable_tqdm=True,
        use_cpu=True,
        seed=cfg.seed,
        dataloader_num_workers=0,
    )
    collator = DataCollatorWithPadding(tokenizer)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
    masks = [b["attention_mask"] for b in trainer.get_train_dataloader()]
    clock = EpochClock()
    trainer.add_callback(clock)
    trainer.train()
    return {"seconds": clock.seconds, "steps": clock.steps, "padding_efficiency": efficiency(masks)}


def run_one(setup: Setup, name: str) -> dict[str, Any]:
    if name == "xlt":
        return run_xlt(setup)
    if name == "bare":
        return run_bare(setup)
    return run_hf(setup, name.removeprefix("hf_"))


def padding_efficiency(
    setup: Setup, batch_size: int = 32, udpos_sentences: int | None = None
) -> dict[str, Any]:
    """Real tokens / padded tokens of xlt's training batches (one epoch) on UD-POS and SNLI."""
    from xlt.data.datamodule import StageDataModule, prepare_stage_data
    from xlt.tasks.registry import get_task

    out = {}
    for task, train_task, split, limit in (("udpos", "udpos", "train", udpos_sentences),
                                           ("xnli", "snli", "dev", None)):  # fmt: skip
        spec = get_task(task)
        data = prepare_stage_data(task=spec, train_task=get_task(train_task), train_split=split, dev_split=None,
                                  test_split=None, languages=[], settings=setup.session.settings, max_len=256,
                                  max_train=limit, max_eval=None)  # fmt: skip
        dm = StageDataModule(data, setup.session.model.tokenizer, batch_size, 64, setup.cfg.seed)
        masks = [b["attention_mask"] for b in dm.train_dataloader()]
        assert data.train is not None
        out[f"{train_task}_{split}"] = {"features": len(data.train), "batch_size": batch_size,
                                        "padding_efficiency": efficiency(masks)}  # fmt: skip
    return out


def profile_xlt(setup: Setup, top: int) -> str:
    """cProfile of one xlt training epoch (run_xlt), the top functions by own time and by cumulative."""
    profiler = cProfile.Profile()
    profiler.enable()
    result = run_xlt(setup)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    text.write(f"one xlt epoch: {result['seconds']:.1f} s, {result['steps']} steps\n")
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return text.getvalue()


def summarise(times: list[dict[str, Any]], examples: int) -> dict[str, Any]:
    seconds = [t["seconds"] for t in times]
    rates = [examples / s for s in seconds]
    return {
        "examples_per_s": statistics.median(rates),
        "examples_per_s_min": min(rates),
        "examples_per_s_max": max(rates),
        "seconds_per_step": statistics.median(s / t["steps"] for s, t in zip(seconds, times, strict=True)),
        "steps": times[0]["steps"],
        "padding_efficiency": times[0]["padding_efficiency"],
        "repeats": len(times),
    }


def measure(examples: int, repeats: int, trainers: tuple[str, ...] = TRAINERS, batch_size: int = 16,
            max_len: int = 128, udpos_sentences: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Run the trainers ``repeats`` times each, alternating, and the padding-efficiency check."""
    with tempfile.TemporaryDirectory(prefix="xlt-bench-train-") as tmp:
        setup = Setup(examples, batch_size, max_len, Path(tmp))
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trainers}
        for r in range(repeats):
            order = trainers[r % len(trainers) :] + trainers[: r % len(trainers)]
            for name in order:
                runs[name].append(run_one(setup, name))
                print(f"repeat {r + 1}/{repeats} {name}: {runs[name][-1]['seconds']:.1f} s", flush=True)
        results = {name: summarise(times, setup.examples) for name, times in runs.items()}
        padding = padding_efficiency(setup, udpos_sentences=udpos_sentences)
    ratios = {}
    rate = {name: r["examples_per_s"] for name, r in results.items()}
    if "xlt" in rate:
        for other in ("hf_group_by_length", "hf_dynamic", "hf_fixed"):
            if other in rate:
                ratios[f"xlt_vs_{other}"] = rate["xlt"] / rate[other]
        if "bare" in results:
            ratios["xlt_step_over_bare_step"] = (
                results["xlt"]["seconds_per_step"] / results["bare"]["seconds_per_step"]
            )
    return {"examples": setup.examples, "batch_size": batch_size, "max_len": max_len, "trainers": results,
            "ratios": ratios, "padding": padding, "raw": runs}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--trainers", default=",".join(TRAINERS))
    parser.add_argument("--profile", action="store_true", help="cProfile one xlt epoch instead")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="xlt-bench-train-") as tmp:
            print(profile_xlt(Setup(args.examples, 16, 128, Path(tmp)), args.top))
        return
    result = measure(args.examples, args.repeats, tuple(args.trainers.split(",")))
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
