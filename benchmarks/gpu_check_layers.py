"""Part (b) of the GPU check (benchmarks/gpu_check.py): one transformer layer of each family at real
width, FSDP over every GPU of the node, the run's own optimizer and precision policy, measured against
xlt.plan and asserted.

Per family (``--layer-models``, default ``xlmr_xxl,qwen2_5_7b``: XLMRobertaXLLayer at hidden 4096,
Qwen2DecoderLayer at hidden 3584), every rank builds the layer class of the family table
(xlt/modeling/families.py, the class the FSDP profiles wrap), wraps it with torch FSDP as
xlt.training.strategies.FSDP does (FULL_SHARD, one unit per layer, the precision policy of
xlt.training.strategies.PolicyFSDPPrecision, activation checkpointing on the layer), and trains it with
xlt's own AdamW set-up (decay groups, ``adamw_implementation``: fused where the parameters allow) for
``--warmup`` + ``--steps`` steps of ``--batch`` x ``--seq-len`` tokens a rank.

World size = the GPU count (``torch.cuda.device_count()``; NCCL) or, on CPU, ``--cpu-world`` gloo
processes (default 2). Reported per family: step time (the slowest rank), tokens/s, FLOPs executed
(the plan's formula for one layer: forward + backward + the recomputed forward, matmuls and
attention), the card's bf16 peak (xlt.plan.jobs.peak_flops, by device name: H100 SXM/PCIe/NVL, H200,
A100; unknown -> no MFU), the utilisation, and the peak memory per GPU against the plan's terms for
the same layer (sharded fp32 states, the gathered bf16 unit and its gradient, one layer's activations
and the checkpointed input).

Assertions (any failure: one line on stderr, exit 1):
- every rank ran, FSDP's world size is the requested count, each rank holds ~1/world of the layer;
- the optimizer is the fused AdamW wherever the run's would be (``adamw_implementation``);
- the loss is finite and equal on every rank;
- with a known peak: utilisation >= ``--plan-mfu`` x (1 - ``--mfu-tolerance``) (default 0.4 x 0.5:
  the plan's GPU-hours are then at most 2x low);
- on a GPU: measured peak memory within ``--memory-tolerance`` (default 30%) of the estimate.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def layer_config(model: str, width: int | None) -> tuple[Any, Any, Any]:
    """(model config, HF config of one layer, Architecture) for ``model``'s YAML; ``width`` shrinks
    hidden (FFN 4x, 4 heads, 2 key/value heads) for the CPU check."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from xlt.plan import Architecture, hf_config
    from xlt.schema import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", "+target=xnli"])
    m = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(m, dict)
    m["num_layers"] = 1
    if width:
        m.update(hidden_size=width, intermediate_size=4 * width, num_attention_heads=4)
        if m.get("num_key_value_heads"):
            m["num_key_value_heads"] = 2
    m = OmegaConf.create(m)
    config = hf_config(m)
    config._attn_implementation = "sdpa"
    return m, config, Architecture.from_model(m)


def estimate_layer(arch: Any, world: int, batch: int, seq_len: int, gpu: bool) -> dict[str, float]:
    """The plan's terms for one FSDP-wrapped layer (xlt.plan.memory): fp32 weights, gradients and
    AdamW states sharded over ``world``; the gathered bf16 unit and its unsharded bf16 gradient; the
    checkpointed fp32 input, the recomputed layer's activations, the fp32 output; fused AdamW's
    temporaries (one tensor's shard)."""
    from xlt.plan import activation_bytes_per_layer, count_parameters

    per_layer = count_parameters(arch).per_layer
    tokens = batch * seq_len
    states = 16.0 * per_layer / world
    gathered = 2.0 * 2 * per_layer
    layer = activation_bytes_per_layer(arch, tokens, batch, seq_len, "bf16-mixed", not arch.decoder, gpu)
    activations = layer + 2 * tokens * arch.hidden * 4
    step = 4.0 * max(arch.hidden * arch.ffn, arch.hidden * arch.hidden) / world
    return {"states": states, "gathered": gathered, "activations": activations, "optimizer_step": step,
            "peak": states + max(activations + gathered, step)}  # fmt: skip


def layer_flops(arch: Any, batch: int, seq_len: int, passes: int) -> float:
    """The plan's FLOPs (xlt.plan.jobs.JobPlan) for one layer: passes x (2 x parameters x tokens +
    4 x hidden x tokens x length)."""
    from xlt.plan import count_parameters

    tokens = batch * seq_len
    return passes * (2.0 * count_parameters(arch).per_layer * tokens + 4.0 * arch.hidden * tokens * seq_len)


def _block(layer_cls: Any, config: Any, decoder: bool) -> Any:
    import torch
    from torch import nn

    class Block(nn.Module):
        """The layer, and for a decoder the rotary embedding that feeds it (as Qwen2Model does)."""

        def __init__(self) -> None:
            super().__init__()
            self.layer = layer_cls(config, layer_idx=0)
            self.rotary = None
            if decoder:
                from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

                self.rotary = Qwen2RotaryEmbedding(config)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.rotary is None:
                out = self.layer(x)
            else:
                positions = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
                out = self.layer(x, position_ids=positions, position_embeddings=self.rotary(x, positions))
            return out[0] if isinstance(out, tuple) else out

    return Block()


def worker(rank: int, world: int, args: Any, port: int, out_dir: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
    from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy

    from xlt.modeling.families import family_of, layer_policy, resolve
    from xlt.modeling.module import NO_DECAY, adamw_implementation
    from xlt.training.strategies import PolicyFSDPPrecision

    gpu = args.device == "cuda"
    if gpu:
        torch.cuda.set_device(rank)
    device = torch.device("cuda", rank) if gpu else torch.device("cpu")
    dist.init_process_group("nccl" if gpu else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)  # fmt: skip
    results = []
    try:
        for model in args.layer_models.split(","):
            m, config, arch = layer_config(model, args.layer_width)
            family = family_of(m)
            layer_cls = resolve(family.layer_class)
            torch.manual_seed(0)

            with torch.device(device):
                block = _block(layer_cls, config, family.decoder).train()
            total = sum(p.numel() for p in block.parameters())
            policy = PolicyFSDPPrecision("bf16-mixed", device=torch.device(device).type)
            sharded = FullyShardedDataParallel(block, auto_wrap_policy=layer_policy(family.name),
                                               mixed_precision=policy.mixed_precision_config,
                                               sharding_strategy=ShardingStrategy.FULL_SHARD, device_id=device,
                                               use_orig_params=True)  # fmt: skip
            apply_activation_checkpointing(sharded, check_fn=lambda mod, cls=layer_cls: isinstance(mod, cls))
            units = FullyShardedDataParallel.fsdp_modules(sharded)
            local = sum(u._flat_param.numel() for u in units if getattr(u, "_flat_param", None) is not None)
            decay, no_decay = [], []
            for name, p in sharded.named_parameters():
                (no_decay if any(tag in name for tag in NO_DECAY) else decay).append(p)
            params = [*decay, *no_decay]
            impl = adamw_implementation(params)
            optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                           {"params": no_decay, "weight_decay": 0.0}], lr=1e-5, **impl)  # fmt: skip
            gen = torch.Generator(device="cpu").manual_seed(1)
            x = torch.randn(args.batch, args.seq_len, arch.hidden, generator=gen).to(device)
            if gpu:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            times, losses = [], []
            for step in range(args.warmup + args.steps):
                dist.barrier()
                if gpu:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                with policy.forward_context():
                    loss = sharded(x).float().pow(2).mean()
                loss.backward()
                sharded.clip_grad_norm_(1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=False)  # as Lightning: gradients stay allocated
                if gpu:
                    torch.cuda.synchronize()
                elapsed = torch.tensor([time.perf_counter() - start])
                dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the step takes its slowest rank's time
                if step >= args.warmup:
                    times.append(float(elapsed))
                losses.append(float(loss.detach()))
            peak_memory = torch.cuda.max_memory_allocated() if gpu else None
            results.append({
                "model": model, "family": family.name, "layer_class": layer_cls.__name__, "hidden": arch.hidden,
                "ffn": arch.ffn, "rank": rank, "world": dist.get_world_size(), "layer_params": total,
                "local_flat_params": local, "fused_adamw": bool(optimizer.defaults.get("fused")),
                "fused_expected": bool(impl.get("fused")), "losses": losses, "step_seconds": times,
                "peak_memory_bytes": peak_memory,
            })  # fmt: skip
            del sharded, optimizer, block
            if gpu:
                torch.cuda.empty_cache()
    finally:
        dist.destroy_process_group()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))


def run(args: Any, gpu: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """Spawn the ranks, gather their results, judge them: (one result per family, failures)."""
    import tempfile

    import torch
    import torch.multiprocessing as mp

    from xlt.plan.jobs import peak_flops

    world = torch.cuda.device_count() if gpu else args.cpu_world
    args.device = "cuda" if gpu else "cpu"
    port = 29600 + os.getpid() % 2000
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(worker, args=(world, args, port, tmp), nprocs=world, join=True)
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)
                 if Path(tmp, f"rank{r}.json").exists()]  # fmt: skip
    failures = []
    if len(ranks) != world:
        return [], [f"only {len(ranks)} of {world} ranks reported"]
    card = torch.cuda.get_device_name(0) if gpu else None
    peak = peak_flops(card) if card else None
    if args.peak_flops:
        peak = ("--peak-flops", args.peak_flops)
    out = []
    for i, model in enumerate(args.layer_models.split(",")):
        per_rank = [r[i] for r in ranks]
        first = per_rank[0]
        _, _, arch = layer_config(model, args.layer_width)
        seconds = sum(first["step_seconds"]) / len(first["step_seconds"])
        tokens = args.batch * args.seq_len  # a rank's
        executed = layer_flops(arch, args.batch, args.seq_len, passes=4)
        model_flops = layer_flops(arch, args.batch, args.seq_len, passes=3)
        estimate = estimate_layer(arch, world, args.batch, args.seq_len, gpu)
        result = {
            "part": "b", "model": model, "layer_class": first["layer_class"], "hidden": first["hidden"],
            "device": card or "CPU", "world": world, "batch": args.batch, "seq_len": args.seq_len,
            "step_seconds": seconds, "tokens_per_s": tokens / seconds, "flops_executed_per_step": executed,
            "peak_flops": peak[1] if peak else None, "peak_source": peak[0] if peak else "unknown card: no MFU",
            "utilisation": executed / seconds / peak[1] if peak else None,
            "mfu": model_flops / seconds / peak[1] if peak else None,
            "fused_adamw": first["fused_adamw"], "losses": first["losses"],
            "measured_peak_bytes": first["peak_memory_bytes"], "estimated_peak_bytes": estimate["peak"],
            "estimate": estimate,
        }  # fmt: skip
        result["estimate_over_measured"] = (estimate["peak"] / first["peak_memory_bytes"]
                                            if first["peak_memory_bytes"] else None)  # fmt: skip
        out.append(result)
        label = f"{model} ({first['layer_class']}, hidden {first['hidden']})"
        if any(r["world"] != world for r in per_rank):
            failures.append(f"{label}: FSDP world size {per_rank[0]['world']}, expected {world} (every GPU)")
        shard = math.ceil(first["layer_params"] / world)
        if world > 1 and not all(shard <= r["local_flat_params"] <= shard + 1024 for r in per_rank):
            failures.append(f"{label}: a rank holds {[r['local_flat_params'] for r in per_rank]} parameters, "
                            f"expected ~{shard:,} (1/{world} of {first['layer_params']:,})")  # fmt: skip
        if first["fused_expected"] and not all(r["fused_adamw"] for r in per_rank):
            failures.append(f"{label}: AdamW is not fused although the run's set-up would fuse it")
        if not all(math.isfinite(v) for r in per_rank for v in r["losses"]):
            failures.append(f"{label}: a loss is not finite")
        if any(r["losses"] != first["losses"] for r in per_rank):
            failures.append(f"{label}: ranks disagree on the loss ({[r['losses'][-1] for r in per_rank]})")
        bound = args.plan_mfu * (1 - args.mfu_tolerance)
        if result["utilisation"] is not None and result["utilisation"] < bound:
            failures.append(f"{label}: throughput {result['utilisation']:.1%} of {result['peak_source']} peak, below "
                            f"{bound:.1%} (xlt.plan assumes {args.plan_mfu:.0%}; --mfu-tolerance {args.mfu_tolerance})")  # fmt: skip
        ratio = result["estimate_over_measured"]
        if ratio is not None and abs(1 / ratio - 1) > args.memory_tolerance:
            failures.append(f"{label}: peak memory {first['peak_memory_bytes'] / 2**30:.2f} GiB, the plan's estimate "
                            f"{estimate['peak'] / 2**30:.2f} GiB (outside {args.memory_tolerance:.0%})")  # fmt: skip
    return out, failures
