"""Training tokens, FLOPs and GPU-hours of a job; one job's plan (:func:`plan_job`) and the GPU-memory
check :func:`xlt.config.validate` calls (:func:`check_gpu_memory`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from omegaconf import DictConfig

from xlt.plan.memory import GB, Hardware, MemoryEstimate, choices_of, estimate_memory, stage_members, stages
from xlt.plan.model import Architecture, ParamCount, count_parameters
from xlt.schema import ConfigError

# bf16 dense peak throughput (no sparsity) from the vendors' data sheets.
GPUS = {
    "h100": ("H100 SXM", 989e12),
    "a100": ("A100", 312e12),
}

# English training-set sizes (examples; for a '+'-joined split, per part), with their sources. Splits
# not listed are counted in the data directory (data.dir / ../shared/data) when they are there.
# Numbers from ../shared/docs/reference.md (the HF dataset cards and jiant/XTREME files it cites).
TRAIN_SIZES: dict[tuple[str, str], tuple[int, str]] = {
    ("mnli", "train"): (392_702, "GLUE MNLI train (HF nyu-mll/glue)"),
    ("snli", "train"): (550_152, "SNLI train rows (HF stanfordnlp/snli), incl. the few without a gold label"),
    ("anli_rounds", "train_r1"): (16_946, "ANLI R1 train (HF facebook/anli)"),
    ("anli_rounds", "train_r2"): (45_460, "ANLI R2 train (HF facebook/anli)"),
    ("anli_rounds", "train_r3"): (100_459, "ANLI R3 train (HF facebook/anli)"),
    ("qqp", "train"): (363_846, "GLUE QQP train (HF nyu-mll/glue)"),
    ("squad", "train"): (87_599, "SQuAD v1.1 train"),
    ("squad2", "train"): (130_319, "SQuAD v2.0 train"),
    ("hellaswag", "train"): (39_905, "HellaSwag train (HF Rowan/hellaswag)"),
    ("cosmosqa", "train"): (25_262, "Cosmos QA train (TFDS cosmos_qa)"),
    ("csqa", "train"): (9_741, "CommonsenseQA v1.11 train"),
    ("panx", "train"): (20_000, "PAN-X en train (HF google/xtreme PAN-X.en, 20k/10k/10k)"),
    ("pawsx", "train"): (49_401, "PAWS-X en train (unverified: reference.md marks it [U])"),
    ("tydiqa", "train"): (3_696, "TyDiQA-GoldP en train (unverified: reference.md marks it [U])"),
}


@dataclass
class StageTokens:
    stage: str
    examples: int | None  # None: a training-set size is unknown
    epochs: float
    seq_len: int
    sources: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> float | None:
        return None if self.examples is None else self.examples * self.epochs * self.seq_len


@cache
def _local_count(task: str, split: str, data_dir: str | None) -> tuple[int | None, str]:
    from xlt.tasks.loading import MissingDataError, load_split, resolve_source
    from xlt.tasks.registry import get_task

    try:
        source, directory = resolve_source("local", data_dir)
        loaded = load_split(get_task(task), split, "en", source, directory)
    except (MissingDataError, FileNotFoundError):
        return None, f"{task}/{split}: size unknown (not in the published table, no local file)"
    return len(loaded.examples), f"counted in {loaded.origin}"


def training_set_size(task: str, split: str, data_dir: str | None) -> tuple[int | None, str]:
    """(examples, where the number comes from) of an English training split; '+' joins parts."""
    total, sources = 0, []
    for part in split.split("+"):
        known = TRAIN_SIZES.get((task, part))
        n, source = known if known else _local_count(task, part, data_dir)
        if n is None:
            return None, source
        total += n
        sources.append(f"{task}/{part} {n:,} ({source})")
    return total, "; ".join(sources)


def stage_tokens(cfg: DictConfig, name: str, stage: DictConfig) -> StageTokens:
    """Examples x epochs x max_seq_length x choices (an upper bound on the tokens a stage trains)."""
    data_dir = cfg.data.get("dir")
    epochs = float(cfg.trainer.get("max_epochs") or stage.epochs)
    members = stage_members(cfg, stage, name)
    seq_len = int(stage.max_seq_length)
    sampling = stage.get("sampling")
    if name == "intermediate" and sampling is not None and sampling.get("steps_per_epoch"):
        n = sampling.steps_per_epoch * stage.batch_size
        return StageTokens(
            name, n, epochs, seq_len, [f"intermediate.sampling.steps_per_epoch x batch = {n:,}"]
        )
    examples = 0
    sources = []
    for task, split, cap in members:
        n, source = training_set_size(task, split, data_dir)
        if n is None:
            return StageTokens(name, None, epochs, seq_len, [source])
        capped = min(n, cap) if cap else n
        sampling_cap = sampling.get("cap") if sampling is not None and name == "intermediate" else None
        capped = min(capped, sampling_cap) if sampling_cap else capped
        examples += capped * choices_of(task)
        note = f" capped at {capped:,}" if capped != n else ""
        sources.append(source + note + (f" x {choices_of(task)} choices" if choices_of(task) > 1 else ""))
    return StageTokens(name, examples, epochs, seq_len, sources)


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
    # (reuse.intermediate, xlt/reuse.py): trained by one of them, so a sweep's total counts it once.
    intermediate_key: str | None = None

    @property
    def total_tokens(self) -> float | None:
        values = [t.tokens for t in self.tokens]
        return None if any(v is None for v in values) else float(sum(v for v in values if v is not None))

    @property
    def flops(self) -> float | None:
        tokens = self.total_tokens
        return None if tokens is None else 6.0 * self.params.non_embedding * tokens

    def gpu_hours(self, peak_flops: float, mfu: float) -> float | None:
        flops = self.flops
        return None if flops is None else flops / (peak_flops * mfu) / 3600

    def stage_gpu_hours(self, stage: str, peak_flops: float, mfu: float) -> float:
        """The GPU-hours of one training stage (0 when the job has no such stage)."""
        tokens = sum(t.tokens or 0 for t in self.tokens if t.stage == stage)
        return 6.0 * self.params.non_embedding * tokens / (peak_flops * mfu) / 3600

    @property
    def fits(self) -> bool:
        return self.memory.peak <= self.limit_gb * GB

    def refusal(self) -> str:
        """The one line that says why the job does not fit, and what to change."""
        from xlt.schema import group_choices

        m = self.memory
        advice = []
        if m.shards == 1:
            own = f"scale={self.model}, " if self.model in group_choices("scale") else ""
            advice.append(f"a sharded profile ({own}scale=fsdp)")
        if not m.checkpointing:
            advice.append("scale.activation_checkpointing=true")
        advice += ["a smaller scale.per_device_batch_size (accumulation keeps the batch)", "more scale.devices",
                   "or scale.peft=lora"]  # fmt: skip
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
    return JobPlan(label, cfg.model.name, cfg.scale.name, cfg.scale.devices * cfg.scale.num_nodes,
                   count_parameters(arch), memory, tokens, float(cfg.scale.gpu_memory_gb),
                   cfg.model.get("params"))  # fmt: skip


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
