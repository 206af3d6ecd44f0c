"""Training tokens, FLOPs and GPU-hours of a job; one job's plan (:func:`plan_job`) and the GPU-memory
check :func:`xlt.config.validate` calls (:func:`check_gpu_memory`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from math import gcd

from omegaconf import DictConfig, OmegaConf

from xlt.plan.host import HostMemory, estimate_host
from xlt.plan.memory import (
    GB,
    Hardware,
    MemoryEstimate,
    choices_of,
    estimate_memory,
    stage_members,
    stage_per_device,
    stages,
)
from xlt.plan.model import Architecture, ParamCount, count_parameters
from xlt.plan.tokens import padded_tokens_per_example
from xlt.schema import ConfigError, group_choices
from xlt.tasks.lengths import seq_length
from xlt.tasks.loading import MissingDataError, load_split, resolve_source
from xlt.tasks.registry import get_task

# bf16 dense peak throughput (no sparsity) from the vendors' data sheets.
GPUS = {
    "h100": ("H100 SXM", 989e12),
    "h100-pcie": ("H100 PCIe", 756e12),
    "h100-nvl": ("H100 NVL", 835e12),
    "h200": ("H200", 989e12),
    "a100": ("A100", 312e12),
}
# torch.cuda.get_device_name() substrings -> GPUS key, most specific first ("NVIDIA H100 80GB HBM3"
# is the SXM card; "NVIDIA H100 PCIe", "NVIDIA H100 NVL"; "NVIDIA H200"; "NVIDIA A100-SXM4-80GB").
DEVICE_NAMES = (
    ("H100 PCIe", "h100-pcie"),
    ("H100 NVL", "h100-nvl"),
    ("H200", "h200"),
    ("H100", "h100"),
    ("A100", "a100"),
)


def peak_flops(device_name: str) -> tuple[str, float] | None:
    """(card, bf16 dense peak FLOP/s) of a ``torch.cuda.get_device_name()``; None for a card not in
    :data:`GPUS` (no MFU is computed against a guess)."""
    for needle, key in DEVICE_NAMES:
        if needle.lower() in device_name.lower():
            return GPUS[key]
    return None


@dataclass
class StageTokens:
    """What one training stage computes on. ``tokens_per_epoch``: the rows the encoder runs, each
    padded to its batch's longest after length grouping (measured lengths, :mod:`xlt.plan.tokens`),
    or to ``max_seq_length`` for a task without a measurement (``upper_bound``); ``length_tokens``:
    the sum of tokens x padded length (attention's score and value products scale with it)."""

    stage: str
    examples: int | None  # None: a training-set size is unknown (sequences: x choices)
    epochs: float
    seq_len: int
    sources: list[str] = field(default_factory=list)
    tokens_per_epoch: float | None = None
    length_tokens_per_epoch: float | None = None
    upper_bound: bool = False

    @property
    def tokens(self) -> float | None:
        return None if self.tokens_per_epoch is None else self.tokens_per_epoch * self.epochs

    @property
    def length_tokens(self) -> float | None:
        return None if self.length_tokens_per_epoch is None else self.length_tokens_per_epoch * self.epochs


@cache
def _local_count(task: str, split: str, data_dir: str | None) -> tuple[int | None, str]:
    try:
        source, directory = resolve_source("local", data_dir)
        loaded = load_split(get_task(task), split, "en", source, directory)
    except (MissingDataError, FileNotFoundError):
        return None, f"{task}/{split}: size unknown (not in the published table, no local file)"
    return len(loaded.examples), f"counted in {loaded.origin}"


def training_set_size(task: str, split: str, data_dir: str | None) -> tuple[int | None, str]:
    """(examples, where the number comes from) of an English training split; '+' joins parts: the
    spec's published size (``TaskSpec.train_sizes``), else counted in the data directory."""
    total, sources = 0, []
    for part in split.split("+"):
        known = get_task(task).train_sizes.get(part)
        n, source = known if known else _local_count(task, part, data_dir)
        if n is None:
            return None, source
        total += n
        sources.append(f"{task}/{part} {n:,} ({source})")
    return total, "; ".join(sources)


def _member_tokens(task: str, per_device: int, seq_len: int) -> tuple[float, float, bool]:
    """(tokens, tokens x length) per example of ``task`` and whether that is the padded upper bound."""
    measured = padded_tokens_per_example(task, per_device, seq_len)
    choices = choices_of(task)
    if measured is None:
        return float(choices * seq_len), float(choices * seq_len * seq_len), True
    return measured[0] * choices, measured[1] * choices, False


def stage_tokens(cfg: DictConfig, name: str, stage: DictConfig) -> StageTokens:
    """Examples x epochs x tokens per example after length grouping (see :class:`StageTokens`)."""
    data_dir = cfg.data.get("dir")
    epochs = float(cfg.trainer.get("max_epochs") or stage.epochs)
    members = stage_members(cfg, stage, name)
    seq_len = seq_length(stage)
    per_device, _ = stage_per_device(cfg, stage, name)
    sampling = stage.get("sampling")
    sizes: list[tuple[str, int]] = []
    sources = []
    for task, split, cap in members:
        n, source = training_set_size(task, split, data_dir)
        if n is None:
            return StageTokens(name, None, epochs, seq_len, [source])
        capped = min(n, cap) if cap else n
        sampling_cap = sampling.get("cap") if sampling is not None and name == "intermediate" else None
        capped = min(capped, sampling_cap) if sampling_cap else capped
        sizes.append((task, capped))
        note = f" capped at {capped:,}" if capped != n else ""
        sources.append(source + note + (f" x {choices_of(task)} choices" if choices_of(task) > 1 else ""))
    per_task = {task: _member_tokens(task, per_device, seq_len) for task, _ in sizes}
    upper = [task for task, (_, _, bound) in per_task.items() if bound]
    for task, (tokens, _, bound) in per_task.items():
        sources.append(
            f"{task}: {tokens:,.1f} tokens/example after length grouping at {per_device} a device"
            + (
                f" (no measured lengths: padded to {seq_len}, an upper bound)"
                if bound
                else " (measured lengths, xlt/plan/token_stats.json)"
            )
        )
    if name == "intermediate" and sampling is not None and sampling.get("steps_per_epoch"):
        # A fixed number of draws: each example costs the members' mean, weighted by their sizes.
        n = sampling.steps_per_epoch * stage.batch_size
        total = sum(size for _, size in sizes) or 1
        tok = sum(per_task[t][0] * size for t, size in sizes) / total
        sq = sum(per_task[t][1] * size for t, size in sizes) / total
        return StageTokens(
            name,
            n,
            epochs,
            seq_len,
            [f"intermediate.sampling.steps_per_epoch x batch = {n:,}", *sources[len(sizes) :]],
            n * tok,
            n * sq,
            bool(upper),
        )
    examples = sum(size * choices_of(task) for task, size in sizes)
    tokens = sum(per_task[task][0] * size for task, size in sizes)
    squared = sum(per_task[task][1] * size for task, size in sizes)
    return StageTokens(name, examples, epochs, seq_len, sources, tokens, squared, bool(upper))


@dataclass
class JobPlan:
    label: str
    model: str
    scale: str
    world: int
    params: ParamCount
    memory: MemoryEstimate
    tokens: list[StageTokens]
    limit_gb: float
    published: int | None = None
    # The key of an intermediate stage this job shares with the other jobs of its sweep
    # (reuse.intermediate, xlt/orchestration/reuse.py): trained by one of them, so a sweep's total counts it once.
    intermediate_key: str | None = None
    layers_x_hidden: int = 0
    batches: list[str] = field(default_factory=list)  # "stage: per-device x devices x accumulation"
    host: HostMemory | None = None  # attention's FLOPs per token per attended position: 4 x this per pass

    @property
    def total_tokens(self) -> float | None:
        values = [t.tokens for t in self.tokens]
        return None if any(v is None for v in values) else float(sum(v for v in values if v is not None))

    @property
    def passes(self) -> int:
        """Forward-pass equivalents per training step: forward (1) + backward (2), + the forward
        recomputed in the backward when activation checkpointing is on (1)."""
        return 4 if self.memory.checkpointing else 3

    def _stage_flops(self, t: StageTokens, passes: int) -> float | None:
        if t.tokens is None or t.length_tokens is None:
            return None
        # A forward pass: 2 FLOPs per weight per token (matmuls), and attention's scores and
        # weighted values, 2 x 2 x hidden per token per attended position per layer.
        return passes * (
            2.0 * self.params.non_embedding * t.tokens + 4.0 * self.layers_x_hidden * t.length_tokens
        )

    def _flops(self, passes: int, stage: str | None = None) -> float | None:
        values = [self._stage_flops(t, passes) for t in self.tokens if stage is None or t.stage == stage]
        return None if any(v is None for v in values) else float(sum(v for v in values if v is not None))

    @property
    def flops(self) -> float | None:
        """FLOPs the GPUs execute: recomputation included (what the time depends on)."""
        return self._flops(self.passes)

    @property
    def model_flops(self) -> float | None:
        """Model FLOPs (forward + backward, no recomputation): the numerator of MFU."""
        return self._flops(3)

    def gpu_hours(self, peak_flops: float, mfu: float) -> float | None:
        flops = self.flops
        return None if flops is None else flops / (peak_flops * mfu) / 3600

    def stage_gpu_hours(self, stage: str, peak_flops: float, mfu: float) -> float:
        """The GPU-hours of one training stage (0 when the job has no such stage)."""
        return (self._flops(self.passes, stage) or 0.0) / (peak_flops * mfu) / 3600

    @property
    def fits(self) -> bool:
        return self.memory.peak <= self.limit_gb * GB

    def refusal(self) -> str:
        """The one line that says why the job does not fit, and what to change."""
        m = self.memory
        advice = []
        if m.shards == 1:
            own = f"scale={self.model}, " if self.model in group_choices("scale") else ""
            advice.append(f"a sharded profile ({own}scale=fsdp)")
        if not m.checkpointing:
            advice.append("scale.activation_checkpointing=true")
        advice += [
            "a smaller scale.per_device_batch_size (accumulation keeps the batch)",
            "more scale.devices",
            "or scale.peft=lora",
        ]
        working = m.peak - m.states - m.activations
        return (
            f"model={self.model} scale={self.scale}: estimated {m.peak / GB:.1f} GB per GPU "
            f"(weights {m.weights / GB:.1f} + gradients {m.gradients / GB:.1f} + AdamW {m.optimizer / GB:.1f} "
            f"+ activations {m.activations / GB:.1f} + step working memory {working / GB:.1f}, "
            f"{m.shards} shard{'s' if m.shards > 1 else ''}) exceeds scale.gpu_memory_gb={self.limit_gb:g}; "
            f"use {', '.join(advice)}"
        )


def plan_job(
    cfg: DictConfig, label: str = "", hardware: Hardware | None = None, with_tokens: bool = True
) -> JobPlan:
    """Everything ``python -m xlt.plan`` prints for one composed (validated or not) config."""
    arch = Architecture.from_model(cfg.model)
    memory = estimate_memory(cfg, hardware)
    tokens = [stage_tokens(cfg, name, stage) for name, stage in stages(cfg)] if with_tokens else []
    return JobPlan(
        label,
        cfg.model.name,
        cfg.scale.name,
        cfg.scale.devices * cfg.scale.num_nodes,
        count_parameters(arch),
        memory,
        tokens,
        float(cfg.scale.gpu_memory_gb),
        cfg.model.get("params"),
        layers_x_hidden=arch.layers * arch.hidden,
        batches=[_batch_line(cfg, name, stage) for name, stage in stages(cfg)],
        host=estimate_host(cfg, gpu=True if hardware is None else hardware.gpu),
    )


AUTO = "auto"
# The share of scale.gpu_memory_gb an ``auto`` per-device batch may fill by the estimate: the rest is
# for what the estimate leaves out (CUDA context, NCCL buffers, the caching allocator's fragmentation).
AUTO_MEMORY_FRACTION = 0.85


def resolve_per_device_batch(cfg: DictConfig) -> tuple[int, str]:
    """The per-device batch ``scale.per_device_batch_size: auto`` stands for, and why: the largest
    that divides every training stage's batch over the devices (so accumulation makes up exactly the
    rest of the effective batch) and whose estimated peak (:func:`estimate_memory`, on GPUs) stays
    within :data:`AUTO_MEMORY_FRACTION` of ``scale.gpu_memory_gb``. A model file without its
    architecture block takes the whole batch a device (no accumulation); a job whose 1 does not fit
    gets 1 (and the GPU-memory check then refuses it, saying why)."""
    world = int(cfg.scale.devices) * int(cfg.scale.num_nodes)
    trained = stages(cfg)
    batches = [int(stage.batch_size) for _, stage in trained] or [int(cfg.target.batch_size)]
    room = 0
    for batch in batches:
        room = gcd(room, max(1, batch // world))
    candidates = [c for c in range(room, 0, -1) if room % c == 0]
    if not trained or cfg.model.get("intermediate_size") is None:
        return candidates[0], f"{candidates[0]} (no accumulation: nothing to estimate memory from)"
    limit = AUTO_MEMORY_FRACTION * float(cfg.scale.gpu_memory_gb) * GB
    for candidate in candidates:
        trial = OmegaConf.merge(cfg, {"scale": {"per_device_batch_size": candidate}})
        assert isinstance(trial, DictConfig)
        peak = estimate_memory(trial, Hardware()).peak
        if peak <= limit:
            why = (
                f"{candidate}: the largest dividing the batch over {world} device(s) with an estimated "
                f"{peak / GB:.1f} GB <= {AUTO_MEMORY_FRACTION:.0%} of scale.gpu_memory_gb={cfg.scale.gpu_memory_gb:g}"
            )
            return candidate, why
    return (
        1,
        f"1: no per-device batch fits {AUTO_MEMORY_FRACTION:.0%} of scale.gpu_memory_gb={cfg.scale.gpu_memory_gb:g}",
    )


def _batch_line(cfg: DictConfig, name: str, stage: DictConfig) -> str:
    per_device, accumulate = stage_per_device(cfg, stage, name)
    world = cfg.scale.devices * cfg.scale.num_nodes
    return (
        f"{name} {stage.batch_size} = {per_device} a device x {world} device(s) x {accumulate} accumulation"
    )


def will_use_gpu(cfg: DictConfig) -> bool:
    """Whether the run trains on GPUs: accelerator gpu/cuda, or auto on a machine with CUDA. CPU runs
    (trainer.accelerator=cpu, or auto without CUDA) are not judged by a GPU-memory estimate."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda"):
        return True
    if accelerator != "auto":
        return False
    import torch

    return torch.cuda.is_available()


def fill_host_memory(cfg: DictConfig) -> None:
    """``scale.host_memory_gb`` left null: the plan's per-node host RAM (:mod:`xlt.plan.host`), so the
    run config records what the job needs. Left null for a model file without its architecture."""
    if cfg.scale.get("host_memory_gb") is not None or cfg.model.get("intermediate_size") is None:
        return

    cfg.scale.host_memory_gb = float(estimate_host(cfg, gpu=will_use_gpu(cfg)).request_gb)


def check_gpu_memory(cfg: DictConfig) -> None:
    """Refuse (ConfigError, one line) a GPU run whose estimated peak per GPU exceeds
    ``scale.gpu_memory_gb``. Called by :func:`xlt.config.validate`; CPU runs pass."""
    if not will_use_gpu(cfg) or not stages(cfg):
        return
    if cfg.model.get("intermediate_size") is None:
        return  # a model file without its architecture block: nothing to estimate from
    job = plan_job(cfg, with_tokens=False)
    if not job.fits:
        raise ConfigError(job.refusal())
