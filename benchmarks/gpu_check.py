"""The GPU check: throughput and memory of xlt's training step, against ``python -m xlt.plan``.

    python benchmarks/gpu_check.py                 # on a GPU node: (a) on GPU 0, (b) on every GPU
    python benchmarks/gpu_check.py --model tiny --layer-width 64 --device cpu   # the CPU check (tests)

(a) ``--model`` (default xlmr_large), built from its model YAML with random weights (no hub), trained
    with xlt's own step (TransferModule + its XNLI head, the real Lightning Trainer; bf16-mixed on a
    GPU, fp32 on CPU) on real featurised SNLI dev pairs (XNLI's English training source offline),
    padded to ``--seq-len`` (default 256). Reports tokens/s, model FLOPs utilisation (6 x
    non-embedding parameters x tokens / time / the GPU's bf16 peak) and peak memory against the
    plan's estimate for the same batch and length.
(b) one layer of each family at real width (``--layer-models``, default xlmr_xxl,qwen2_5_7b:
    XLMRobertaXLLayer at hidden 4096, Qwen2DecoderLayer at 3584, the family table's classes) under
    FSDP over every GPU of the node (gloo processes on CPU), with the run's fused AdamW and precision
    policy: throughput against the card's own peak and memory against xlt.plan, ASSERTED (exit 1 on
    a failure, one line each). See benchmarks/gpu_check_layers.py.

Peak memory: ``torch.cuda.max_memory_allocated`` on a GPU. On CPU the process re-executes itself
with glibc's mmap threshold at 64 KiB (every tensor larger than that is mapped and unmapped
immediately), and the peak is ``ru_maxrss`` minus the resident size just before training; the
weights are resident by then, so it is compared with the estimate less the weights.

Writes a JSON file and a Markdown table (``--out``, default benchmarks/results/gpu_check-<device>.*).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def compose(model: str, scale: str, batch: int, seq_len: int, cache_dir: Path, extra: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from xlt.config import validate
    from xlt.schema import CONF_DIR

    overrides = [f"model={model}", f"scale={scale}", "+target=xnli", "target.train_task=snli",
                 "target.train_split=dev", f"target.max_seq_length={seq_len}", f"target.batch_size={batch}",
                 f"scale.per_device_batch_size={batch}", "scale.devices=1", "logger=none",
                 f"data.cache_dir={cache_dir}", *extra]  # fmt: skip
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=overrides)
    # Validated as a CPU run: this script measures what fits, it does not refuse.
    return validate(OmegaConf.merge(cfg, {"trainer": {"accelerator": "cpu"}}))


def build_model(cfg: Any, device_is_gpu: bool) -> Any:
    from transformers import AutoModel

    from xlt.plan import hf_config

    config = hf_config(cfg.model)
    kwargs = {} if config.model_type == "qwen2" else {"add_pooling_layer": False}
    if device_is_gpu:
        import torch

        with torch.device("cuda"):  # initialise on the GPU: a 3.5B model's CPU init would take minutes
            return AutoModel.from_config(config, **kwargs).train()
    return AutoModel.from_config(config, **kwargs).train()


def featurised_batches(cfg: Any, n_examples: int, seq_len: int, cache_dir: Path) -> tuple[Any, Any, Any]:
    """Real SNLI dev pairs featurised by xlt for the XNLI head, and a module-ready data module whose
    batches are padded to ``seq_len`` (pad id, attention mask 0)."""
    from omegaconf import OmegaConf

    from xlt.data.datamodule import DataSettings, StageDataModule, prepare_stage_data
    from xlt.data.features import Collator
    from xlt.modeling.encoder import load_tokenizer
    from xlt.tasks.loading import resolve_source
    from xlt.tasks.registry import get_task

    tokenizer = load_tokenizer(
        OmegaConf.create({"source": "random", "arch": "xlmr"}), cache_dir
    )  # XLM-R tokenizer
    source, data_dir = resolve_source("local", cfg.data.dir)
    settings = DataSettings(source, data_dir, cache_dir, tokenizer)
    data = prepare_stage_data(task=get_task("xnli"), train_task=get_task("snli"), train_split="dev", dev_split=None,
                              test_split=None, languages=[], settings=settings, max_len=seq_len,
                              max_train=n_examples, max_eval=None)  # fmt: skip

    class FixedLength(Collator):
        def __call__(self, rows: list[dict[str, Any]]) -> Any:
            import torch

            out = super().__call__(rows)
            for key, pad in (("input_ids", self.pad_id), ("attention_mask", 0)):
                width = out[key].shape[-1]
                out[key] = torch.nn.functional.pad(out[key], (0, seq_len - width), value=pad)
            return out

    dm = StageDataModule(
        data, tokenizer, cfg.scale.per_device_batch_size, cfg.target.eval_batch_size, cfg.seed
    )
    dm.collate = FixedLength(tokenizer)
    return data, dm, tokenizer


def part_a(args: argparse.Namespace, gpu: bool, cache_dir: Path) -> dict[str, Any]:
    import pytorch_lightning as pl
    import torch

    from xlt.modeling.heads import build_head
    from xlt.modeling.module import TransferModule
    from xlt.plan import Architecture, Hardware, count_parameters, estimate_memory
    from xlt.plan.jobs import peak_flops
    from xlt.tasks.registry import get_task

    cfg = compose(args.model, "default", args.batch, args.seq_len, cache_dir, [])
    steps = args.warmup + args.steps
    data, dm, _ = featurised_batches(cfg, steps * args.batch, args.seq_len, cache_dir)
    encoder = build_model(cfg, gpu)
    xnli = get_task("xnli")
    module = TransferModule(encoder, build_head(xnli, cfg.model.hidden_size, cfg.model.pooling), xnli,
                            cfg.target.lr, cfg.optim, val_sets=[], test_sets=[])  # fmt: skip
    params = count_parameters(Architecture.from_model(cfg.model))
    counted = sum(p.numel() for p in encoder.parameters())
    precision = "bf16-mixed" if gpu else "32-true"

    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.tokens: list[int] = []

        def _now(self) -> float:
            if gpu:
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            self._start = self._now()

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            self.times.append(self._now() - self._start)
            self.tokens.append(int(batch["input_ids"].numel()))

    clock = Clock()
    trainer = pl.Trainer(accelerator="gpu" if gpu else "cpu", devices=1, precision=precision, max_steps=steps,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                         callbacks=[clock], gradient_clip_val=cfg.optim.max_grad_norm,
                         use_distributed_sampler=False)  # fmt: skip
    if gpu:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base, peak_before = rss_bytes(), max_rss_bytes()
    trainer.fit(module, datamodule=dm)
    if gpu:
        measured = torch.cuda.max_memory_allocated()
        measured_what = "torch.cuda.max_memory_allocated during fit (weights included)"
        resident = 0.0
    else:
        measured = max_rss_bytes() - base
        measured_what = "ru_maxrss - RSS before fit (weights already resident)"
        if max_rss_bytes() <= peak_before:
            measured_what += "; INVALID: the process peaked before fit"
    hardware = Hardware(gpu=gpu, precision=precision)
    estimate = estimate_memory(cfg, hardware)
    resident = 0.0 if gpu else estimate.weights
    timed = clock.times[args.warmup :]
    tokens = sum(clock.tokens[args.warmup :])
    seconds = sum(timed)
    flops = 6.0 * params.non_embedding * tokens
    result: dict[str, Any] = {
        "part": "a", "model": args.model, "device": device_name(gpu), "precision": precision,
        "batch": args.batch, "seq_len": args.seq_len, "data": data.train_origin,
        "params_counted": counted, "params_plan": params.total, "params_non_embedding": params.non_embedding,
        "steps_timed": len(timed), "tokens": tokens, "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds else None,
        "model_flops_per_s": flops / seconds if seconds else None,
        "measured_peak_bytes": measured, "measured": measured_what,
        "estimated_peak_bytes": estimate.peak - resident,
        "estimate": {"weights": estimate.weights, "gradients": estimate.gradients, "optimizer": estimate.optimizer,
                     "activations": estimate.activations, "optimizer_step": estimate.optimizer_step,
                     "excluded_resident_weights": resident},
    }  # fmt: skip
    if gpu:
        card = peak_flops(torch.cuda.get_device_name(0))
        peak = args.peak_flops or (card[1] if card else None)
        result["mfu"] = flops / seconds / peak if seconds and peak else None
        result["peak_flops"] = peak
    result["estimate_over_measured"] = result["estimated_peak_bytes"] / measured if measured > 0 else None
    return result


def part_b(args: argparse.Namespace, gpu: bool) -> list[dict[str, Any]]:
    """One layer of each family at real width under FSDP on every GPU: benchmarks/gpu_check_layers.py."""
    from gpu_check_layers import run

    results, failures = run(args, gpu)
    for line in failures:
        print(f"gpu_check: FAILED {line}", file=sys.stderr)
    for r in results:
        r["failures"] = [f for f in failures if f.startswith(r["model"] + " ")]
    if not results:
        results = [{"part": "b", "failures": failures}]
    return results


def _profiles() -> list[str]:
    from xlt.schema import group_choices

    return group_choices("scale")


def device_name(gpu: bool) -> str:
    if gpu:
        import torch

        return torch.cuda.get_device_name(0)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def markdown(results: list[dict[str, Any]]) -> str:
    from xlt.utils.console import text_table

    header = [
        "part",
        "model",
        "device",
        "GPUs",
        "batch x len",
        "tokens/s",
        "MFU",
        "peak measured",
        "estimate",
        "estimate/measured",
        "failures",
    ]
    rows = []
    for r in results:
        if "model" not in r:
            rows.append([r["part"], *[""] * 9, "; ".join(r.get("failures", []))])
            continue
        tps = f"{r['tokens_per_s']:,.0f}" if r.get("tokens_per_s") else ""
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") else ("no MFU (unknown peak)" if r["part"] == "b" else "")
        ratio = f"{r['estimate_over_measured']:.2f}" if r.get("estimate_over_measured") else ""
        measured = (
            f"{r['measured_peak_bytes'] / 2**20:,.0f} MiB" if r.get("measured_peak_bytes") else "not measured"
        )
        model = r["model"] + (f" ({r['layer_class']}, hidden {r['hidden']})" if r["part"] == "b" else "")
        rows.append(
            [
                r["part"],
                model,
                r["device"],
                r.get("world", 1),
                f"{r['batch']} x {r['seq_len']}",
                tps,
                mfu,
                measured,
                f"{r['estimated_peak_bytes'] / 2**20:,.0f} MiB",
                ratio,
                "; ".join(r.get("failures", [])) or "none",
            ]
        )
    lines = [text_table(header, rows)]
    lines.append("")
    lines += [f"- part {r['part']}: measured as {r['measured']}" for r in results if r.get("measured")]
    lines += [
        "- part b: one layer per family under FSDP on every GPU; memory measured on GPUs only "
        "(torch.cuda.max_memory_allocated), asserted there; throughput asserted where the peak is known"
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--model", default="xlmr_large", help="part (a): model YAML to build (random init)")
    parser.add_argument(
        "--layer-models", default="xlmr_xxl,qwen2_5_7b", help="part (b): model YAMLs, one layer each"
    )
    parser.add_argument(
        "--layer-width", type=int, default=None, help="part (b): hidden size instead of the real one (CPU)"
    )
    parser.add_argument("--cpu-world", type=int, default=2, help="part (b) on CPU: gloo processes")
    parser.add_argument("--batch", type=int, default=32, help="part (a): sequences per step")
    parser.add_argument("--fsdp-batch", type=int, default=8, help="part (b): sequences per step a rank")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=3, help="part (a): untimed steps")
    parser.add_argument("--steps", type=int, default=20, help="part (a): timed steps")
    parser.add_argument("--parts", default="ab")
    parser.add_argument(
        "--peak-flops",
        type=float,
        default=None,
        help="the card's bf16 peak (default: xlt.plan.jobs.peak_flops by device name; unknown: no MFU)",
    )
    parser.add_argument(
        "--plan-mfu", type=float, default=0.4, help="part (b): the utilisation xlt.plan assumes"
    )
    parser.add_argument(
        "--mfu-tolerance", type=float, default=0.5, help="part (b): fail below plan-mfu x (1 - this)"
    )
    parser.add_argument(
        "--memory-tolerance", type=float, default=0.3, help="part (b), GPU: |measured/estimate - 1| bound"
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="xlt cache (the e5/XLM-R tokenizer)")
    parser.add_argument("--out", type=Path, default=None, help="output stem (.json and .md are written)")
    args = parser.parse_args(argv)
    if args.device == "auto":
        import torch

        gpu = torch.cuda.is_available()
    else:
        gpu = args.device == "cuda"
    if not gpu and len(args.parts) == 1 and os.environ.get(MMAP_ENV) is None:
        # Make RSS follow the live tensors: glibc maps every allocation over 64 KiB and returns it on free.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, MMAP_ENV: "65536"})
    cache_dir = args.cache_dir or Path(os.environ.get("XLT_CACHE_DIR") or Path.home() / ".cache" / "xlt")
    results = []
    if len(args.parts) > 1:
        # One process per part: a process's peak memory (ru_maxrss, or CUDA's caching allocator) is
        # then that part's alone.
        import subprocess
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            for part in args.parts:
                stem = Path(tmp) / part
                argv_part = list(argv if argv is not None else sys.argv[1:])
                env = {**os.environ, **({} if gpu else {MMAP_ENV: "65536"})}
                subprocess.run([sys.executable, __file__, *argv_part, "--parts", part, "--out", str(stem)],
                               check=False, env=env)  # fmt: skip
                if not stem.with_suffix(".json").exists():
                    raise SystemExit(f"gpu_check: part {part} wrote no results")
                results += json.loads(stem.with_suffix(".json").read_text())
    elif args.parts == "a":
        results.append(part_a(args, gpu, cache_dir))
    elif args.parts == "b":
        args.batch = args.fsdp_batch
        results += part_b(args, gpu)
    else:
        parser.error(f"--parts {args.parts!r}: expected a, b or ab")
    out = args.out or ROOT / "benchmarks" / "results" / f"gpu_check-{'gpu' if gpu else 'cpu'}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(results)
    out.with_suffix(".md").write_text(table)
    print(table)
    failed = [f for r in results for f in r.get("failures", [])]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
