"""Plan a run or a sweep before launching it: parameters, memory per GPU, tokens, FLOPs, GPU-hours.

``python -m xlt.plan`` takes the same overrides as ``xlt.train`` (and ``-m +sweep=...``, expanded as
Hydra's basic sweeper would, without launching anything) and prints, per job:

- parameters, total and non-embedding, counted from the architecture in ``conf/model/<model>.yaml``
  (layers, hidden, FFN width, heads, key/value heads, vocabulary, positions), not from the hub;
- memory per GPU for the job's ``scale`` profile: weights, gradients, AdamW states, activations at
  the per-device batch and ``max_seq_length`` (with and without activation checkpointing) and the
  working memory of a step, divided by the number of shards for sharded profiles (FSDP, ZeRO-3);
- training tokens (examples x epochs x max_seq_length, an upper bound: batches are padded to their
  longest example only), with the source of every training-set size;
- FLOPs (6 x non-embedding parameters x tokens) and GPU-hours at a stated MFU on a named GPU;
- the sweep's totals.

:func:`check_gpu_memory` is what :func:`xlt.config.validate` calls: a run on GPUs whose estimate
exceeds ``scale.gpu_memory_gb`` is refused there in one line, before anything is loaded.

The memory model is arithmetic, documented term by term in :func:`estimate_memory`. It is checked
against hand computations and against the measured peak of a small CPU training run
(tests/test_plan.py, tests/test_gpu_check.py); it has not been checked on a GPU yet.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xlt.config import CONF_DIR, NO_INTERMEDIATE, ConfigError, batch_plan

GB = 1e9
# bf16 dense peak throughput (no sparsity) from the vendors' data sheets.
GPUS = {
    "h100": ("H100 SXM", 989e12),
    "a100": ("A100", 312e12),
}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

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


# -- architecture and parameters ----------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """The sizes that fix a model's parameter count and activation memory."""

    model_type: str  # xlm-roberta | xlm-roberta-xl | qwen2
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    vocab: int
    positions: int
    type_vocab: int

    @classmethod
    def from_model(cls, model: DictConfig) -> Architecture:
        """From a ``model`` config; a missing architecture field is a ConfigError naming it."""
        missing = [
            key
            for key in ("intermediate_size", "num_attention_heads", "vocab_size", "max_position_embeddings")
            if model.get(key) is None
        ]
        if missing:
            raise ConfigError(
                f"model={model.name}: {', '.join('model.' + k for k in missing)} not set "
                "(needed to estimate parameters and memory; copy them from the checkpoint's config.json)"
            )
        model_type = model.get("expected_model_type") or "xlm-roberta"
        if model_type not in ("xlm-roberta", "xlm-roberta-xl", "qwen2"):
            raise ConfigError(f"model={model.name}: no parameter formula for model_type {model_type!r}")
        heads = int(model.num_attention_heads)
        return cls(
            model_type=model_type,
            layers=int(model.num_layers),
            hidden=int(model.hidden_size),
            ffn=int(model.intermediate_size),
            heads=heads,
            kv_heads=int(model.get("num_key_value_heads") or heads),
            vocab=int(model.vocab_size),
            positions=int(model.max_position_embeddings),
            type_vocab=int(model.get("type_vocab_size") or 0),
        )

    @property
    def decoder(self) -> bool:
        return self.model_type == "qwen2"

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads


@dataclass(frozen=True)
class ParamCount:
    total: int
    word_embedding: int  # the input embedding matrix (vocab x hidden)
    per_layer: int
    outside_layers: int  # embeddings (word, position, type) and norms outside the layers

    @property
    def non_embedding(self) -> int:
        """Total minus the word embedding matrix: what results record as ``model_params_non_embedding``."""
        return self.total - self.word_embedding


def count_parameters(arch: Architecture) -> ParamCount:
    """Parameters of the encoder xlt loads (HF ``XLMRobertaModel``/``XLMRobertaXLModel`` without the
    pooler, ``Qwen2Model`` without the LM head), from the architecture alone."""
    h, f = arch.hidden, arch.ffn
    word = arch.vocab * h
    if arch.decoder:
        # q (with bias), k and v (with bias, grouped-query width), o (no bias); SwiGLU gate/up/down (no
        # bias); two RMSNorm weights. Outside: the embedding and the final RMSNorm; rotary has no weights.
        kv = arch.kv_dim
        attention = (h * h + h) + 2 * (h * kv + kv) + h * h
        per_layer = attention + 3 * h * f + 2 * h
        outside = word + h
    else:
        # query/key/value/output with biases, two LayerNorms (weight + bias), FFN in and out with biases.
        per_layer = 4 * (h * h + h) + 2 * h + (h * f + f) + (f * h + h) + 2 * h
        embeddings = word + arch.positions * h + arch.type_vocab * h
        # XLM-R: LayerNorm on the embeddings; XLM-R XL/XXL (pre-LN): a final LayerNorm after the layers.
        outside = embeddings + 2 * h
    return ParamCount(arch.layers * per_layer + outside, word, per_layer, outside)


def lora_parameters(arch: Architecture, lora: DictConfig) -> int:
    """LoRA adapter parameters: r x (in + out) per targeted projection per layer."""
    h, kv = arch.hidden, arch.kv_dim
    shapes = {"query": (h, h), "key": (h, h), "value": (h, h), "dense": (h, h), "q_proj": (h, h),
              "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h)}  # fmt: skip
    total = 0
    for name in lora.target_modules:
        if name not in shapes:
            raise ConfigError(f"scale.lora.target_modules: {name!r} has no known shape for {arch.model_type}")
        n_in, n_out = shapes[name]
        total += lora.r * (n_in + n_out)
    return total * arch.layers


def hf_config(model: DictConfig, **overrides: Any) -> Any:
    """A transformers config for ``model`` built from its YAML alone (no hub): random-init models for
    benchmarks and the parameter-count tests."""
    arch = Architecture.from_model(model)
    common: dict[str, Any] = dict(hidden_size=arch.hidden, num_hidden_layers=arch.layers, num_attention_heads=arch.heads,
                  intermediate_size=arch.ffn, vocab_size=arch.vocab, max_position_embeddings=arch.positions)  # fmt: skip
    if arch.decoder:
        from transformers import Qwen2Config

        return Qwen2Config(
            **common, num_key_value_heads=arch.kv_heads, tie_word_embeddings=False, **overrides
        )
    from transformers import XLMRobertaConfig, XLMRobertaXLConfig

    cls = XLMRobertaXLConfig if arch.model_type == "xlm-roberta-xl" else XLMRobertaConfig
    # XLM-R's special ids (its tokenizer: <s>=0, <pad>=1, </s>=2).
    return cls(**common, type_vocab_size=arch.type_vocab, pad_token_id=1, bos_token_id=0, eos_token_id=2,
               **overrides)  # fmt: skip


# -- memory ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hardware:
    """What the estimate assumes about where the step runs."""

    gpu: bool = True  # GPU: fused SDPA attention (no seq x seq scores kept); CPU: the math path with dropout
    precision: str = "bf16-mixed"


@dataclass
class MemoryEstimate:
    """Bytes per device. ``peak`` = the resident states + the larger of a step's activations (plus
    FSDP's gathered units) and the optimizer step's temporaries."""

    weights: float
    gradients: float
    optimizer: float
    activations: float  # kept for backward, with the profile's checkpointing setting
    activations_no_ckpt: float
    activations_ckpt: float
    gathered: float  # FSDP: unsharded units held during forward/backward
    optimizer_step: float  # temporaries of the AdamW step
    shards: int
    checkpointing: bool
    stage: str  # the stage whose batch and length give the peak

    @property
    def states(self) -> float:
        return self.weights + self.gradients + self.optimizer

    @property
    def peak(self) -> float:
        return self.states + max(self.activations + self.gathered, self.optimizer_step)


def is_sharded(strategy: Any) -> bool:
    """FSDP (FSDPStrategy, ModelParallelStrategy's fully_shard, 'fsdp') or ZeRO stage 3 shard weights,
    gradients and optimizer states over the devices; DDP and single-device runs replicate them."""
    if isinstance(strategy, str):
        return strategy.startswith("fsdp") or strategy == "deepspeed_stage_3" or strategy.endswith("offload")
    target = str(strategy.get("_target_", ""))
    if "FSDP" in target or "ModelParallel" in target:
        return True
    return "DeepSpeed" in target and int(strategy.get("stage", 2)) == 3


def uses_activation_checkpointing(scale: DictConfig) -> bool:
    strategy = scale.strategy
    in_strategy = not isinstance(strategy, str) and any(
        k in strategy for k in ("activation_checkpointing_policy", "activation_checkpointing")
    )
    return bool(scale.activation_checkpointing) or in_strategy


def resolve_precision(precision: str, hardware: Hardware) -> str:
    if precision != "auto":
        return precision
    return hardware.precision if hardware.gpu else "32-true"


def activation_bytes_per_layer(arch: Architecture, tokens: int, seqs: int, seq_len: int, precision: str,
                               dropout: bool, gpu: bool) -> float:  # fmt: skip
    """Bytes one transformer layer keeps for backward, for ``tokens`` = ``seqs`` x ``seq_len`` tokens.

    The accounting of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
    Transformer Models", sec. 4.1), per saved tensor, with FFN width f instead of 4h:
    - e bytes per element for matmul inputs and outputs (2 under bf16 autocast, 4 in fp32); under
      autocast each of the query/key/value projections saves its own bf16 copy of the layer input;
    - LayerNorm/RMSNorm inputs in fp32 (autocast runs norms in fp32);
    - dropout masks: 1 byte on GPUs (``native_dropout``'s bool mask); on CPU ``at::dropout`` keeps a
      scaled mask in the input's dtype (e bytes);
    - attention: the fused SDPA kernels on GPUs keep q, k, v and the output (no seq x seq matrix); on
      CPU with dropout the math path keeps the softmax output, the dropout mask and the dropout
      output ((2e + mask) x heads x seq^2 per sequence) instead of the output.
    """
    h, f = arch.hidden, arch.ffn
    mixed = "mixed" in precision
    e = 2 if any(p in precision for p in ("bf16", "16")) else 4
    norm = 4 if (mixed or e == 4) else 2
    mask = (1 if gpu else e) if dropout else 0
    scores_kept = dropout and not gpu
    qkv_input_copies = 3 if mixed else 1
    if arch.decoder:
        kv = arch.kv_dim
        attention = e * h * qkv_input_copies + e * (h + 2 * kv) + e * h  # input, q/k/v, o_proj input
        mlp = e * h * (2 if mixed else 1) + 4 * e * f  # gate/up input, gate, silu(gate), up, product
        norms = 2 * 2 * norm * h  # two RMSNorms, each its fp32 input and the normalised states
    else:
        attention = (
            e * h * qkv_input_copies + 3 * e * h + e * h + mask * h
        )  # input, q/k/v, out-proj input, mask
        mlp = e * h + 2 * e * f + mask * h  # fc1 input, GELU input, fc2 input, mask
        norms = 2 * norm * h
    per_token = attention + mlp + norms
    if scores_kept:
        per_seq = (2 * e + mask) * arch.heads * seq_len * seq_len
    else:
        per_token += e * h  # the fused kernel's saved output
        per_seq = 0
    return per_token * tokens + per_seq * seqs


def estimate_memory(cfg: DictConfig, hardware: Hardware | None = None) -> MemoryEstimate:
    """Peak memory per device of a training step of ``cfg``'s largest stage, in bytes.

    Resident: weights in ``model.dtype``; fp32 gradients and AdamW's two fp32 states for trainable
    parameters (all but frozen embeddings, or the LoRA adapters); divided by the shard count under
    FSDP/ZeRO-3. Gradients from the previous step are alive during the next forward (Lightning
    zeroes them just before backward), so the peak is at the end of the forward: resident states +
    activations (+ under FSDP the gathered units: the root unit, which FSDP keeps unsharded through
    forward and backward, two layer units (current and prefetched) and their unsharded gradients,
    in the compute dtype). The AdamW step runs after the activations are freed; its temporaries are
    one fp32 copy of the (sharded) trainable parameters on GPUs (foreach implementation) and of the
    largest tensor on CPU (per-tensor loop).
    Activations: :func:`activation_bytes_per_layer` per layer, plus the embedding output; with
    checkpointing each layer keeps only its input, and one layer is recomputed at a time.
    """
    hardware = hardware or Hardware()
    arch = Architecture.from_model(cfg.model)
    counts = count_parameters(arch)
    scale = cfg.scale
    precision = resolve_precision(scale.precision, hardware)
    world = scale.devices * scale.num_nodes
    shards = world if is_sharded(scale.strategy) else 1
    ckpt = uses_activation_checkpointing(scale)
    param_bytes = DTYPE_BYTES[cfg.model.dtype]
    if scale.peft == "lora":
        trainable = lora_parameters(arch, scale.lora)
    else:
        trainable = counts.total - (counts.word_embedding if cfg.model.freeze_embeddings else 0)
    weights = counts.total * param_bytes / shards
    gradients = trainable * 4 / shards
    optimizer = trainable * 8 / shards
    compute_bytes = 2 if any(p in precision for p in ("bf16", "16")) else 4
    gathered = 0.0
    if is_sharded(scale.strategy):  # also on one device: FSDP's bf16 copies of the units in use
        gathered = (2 * counts.outside_layers + 3 * counts.per_layer) * compute_bytes
    if hardware.gpu:
        optimizer_step = trainable * 4 / shards
    else:
        optimizer_step = max(counts.word_embedding, counts.per_layer) * 4.0
    best: tuple[float, float, float, str] | None = None
    for name, stage in stages(cfg):
        seqs, seq_len = stage_batch(cfg, stage, name)
        tokens = seqs * seq_len
        dropout = not arch.decoder  # XLM-R's hidden/attention dropout 0.1; Qwen2.5: 0
        layer = activation_bytes_per_layer(arch, tokens, seqs, seq_len, precision, dropout, hardware.gpu)
        norm = 4 if ("mixed" in precision or compute_bytes == 4) else 2
        mask = (1 if hardware.gpu else compute_bytes) if dropout else 0
        # The embeddings' LayerNorm input and dropout mask, and the 4-D padding mask (bool, one for all layers).
        embedding = tokens * arch.hidden * (norm + mask) + seqs * seq_len * seq_len
        full = arch.layers * layer + embedding
        checkpointed = arch.layers * tokens * arch.hidden * norm + layer + embedding
        if best is None or max(full, checkpointed) > max(best[0], best[1]):
            best = (full, checkpointed, tokens, name)
    if best is None:
        # Nothing trains (a retrieval target): the weights, and one layer's activations at a time at the
        # retrieval batch (no gradients, nothing kept for backward).
        seqs, seq_len = int(cfg.retrieval.batch_size), int(cfg.retrieval.max_seq_length)
        layer = activation_bytes_per_layer(
            arch, seqs * seq_len, seqs, seq_len, precision, False, hardware.gpu
        )
        return MemoryEstimate(weights, 0.0, 0.0, layer, layer, layer, 0.0, 0.0, shards, ckpt, "retrieval")
    full, checkpointed, _, stage_name = best
    return MemoryEstimate(weights, gradients, optimizer, checkpointed if ckpt else full, full, checkpointed,
                          gathered, optimizer_step, shards, ckpt, stage_name)  # fmt: skip


def stages(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    """The training stages of a run: (name, stage config); a retrieval target trains nothing."""
    from xlt.tasks.registry import get_task

    found = []
    intermediate = cfg.get("intermediate")
    if intermediate is not None and intermediate.name != NO_INTERMEDIATE:
        found.append(("intermediate", intermediate))
    if get_task(cfg.target.name).trainable:
        found.append(("target", cfg.target))
    return found


def choices_of(task: str) -> int:
    """Sequences per example: a multiple-choice example encodes every choice."""
    from xlt.tasks.registry import get_task

    spec = get_task(task)
    return spec.num_labels if spec.head == "multiple_choice" else 1


def stage_batch(cfg: DictConfig, stage: DictConfig, name: str) -> tuple[int, int]:
    """(sequences per device per forward, sequence length) of a stage at its max_seq_length."""
    world = cfg.scale.devices * cfg.scale.num_nodes
    try:
        per_device, _ = batch_plan(stage.batch_size, cfg.scale.per_device_batch_size, world)
    except ValueError as err:
        raise ConfigError(f"{name}.batch_size: {err}") from None
    tasks = [t for t, _, _ in stage_members(cfg, stage, name)]
    return per_device * max(map(choices_of, tasks)), int(stage.max_seq_length)


def stage_members(cfg: DictConfig, stage: DictConfig, name: str) -> list[tuple[str, str, int | None]]:
    """(task, training split, example cap) of every task a stage trains on."""
    from xlt.tasks.registry import flatten_mixture, get_mixture

    if name == "target":
        return [(stage.train_task or stage.name, stage.train_split, stage.max_train_examples)]
    mixture = get_mixture(stage.name)
    if mixture is None:
        return [(stage.name, stage.train_split, stage.max_train_examples)]
    members = []
    for task in flatten_mixture(mixture).tasks:
        if stage.get("only") and task not in stage.only:
            continue
        member = (stage.get("members") or {}).get(task) or {}
        cap = member.get("max_train_examples") or stage.max_train_examples
        members.append((task, member.get("train_split") or "train", cap))
    return members


# -- tokens, FLOPs, time ---------------------------------------------------------------------------


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

    @property
    def fits(self) -> bool:
        return self.memory.peak <= self.limit_gb * GB

    def refusal(self) -> str:
        """The one line that says why the job does not fit, and what to change."""
        from xlt.config import group_choices

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


# -- the command line -----------------------------------------------------------------------------


def sweep_jobs(overrides: Sequence[str]) -> list[list[str]]:
    """The jobs of ``-m`` overrides plus the composed config's ``hydra.sweeper.params``, as Hydra's
    basic sweeper lists them: the sweeper's params first, the command line's overriding them by key,
    and the cartesian product of every key's values, in the order the keys first appeared."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    # The primary config, as Hydra's multirun composes it: without the swept values.
    fixed = [str(o.input_line) for o in parser.parse_overrides(list(overrides)) if not o.is_sweep_override()]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        primary = compose("train", overrides=fixed, return_hydra_config=True)
    params = OmegaConf.select(primary, "hydra.sweeper.params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(overrides)
    parsed = parser.parse_overrides(arguments)
    per_key: dict[str, list[str]] = {}
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ConfigError(f"{key}: only discrete sweeps (a,b,c) can be planned")
            per_key[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            per_key[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*per_key.values())]


def _fmt_count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.{1 if unit != 'B' else 2}f}{unit}"
    return f"{n:.0f}"


def _fmt_opt(value: float | None, fmt: str) -> str:
    return "?" if value is None else format(value, fmt)


def _fmt_hours(hours: float | None) -> str:
    if hours is None:
        return "?"
    return f"{hours:,.1f}" if hours == 0 or hours >= 0.1 else f"{hours:.1g}"


def describe(job: JobPlan, gpu: str, mfu: float) -> str:
    """The per-job block: where every number comes from."""
    name, peak = GPUS[gpu]
    m, p = job.memory, job.params
    lines = [f"{job.label}  (scale={job.scale}: {job.world} device(s), {m.shards} shard(s), "
             f"activation checkpointing {'on' if m.checkpointing else 'off'})"]  # fmt: skip
    published = f"; published {_fmt_count(job.published)}" if job.published else ""
    lines.append(
        f"  parameters   {p.total:,} total, {p.non_embedding:,} non-embedding (from the architecture{published})"
    )
    lines.append(
        f"  memory/GPU   weights {m.weights / GB:.2f} + gradients {m.gradients / GB:.2f} + AdamW {m.optimizer / GB:.2f}"
        f" + activations {m.activations / GB:.2f} (without checkpointing {m.activations_no_ckpt / GB:.2f}, with "
        f"{m.activations_ckpt / GB:.2f}; {m.stage} stage) + FSDP gathered {m.gathered / GB:.2f}"
        f" | AdamW step temporaries {m.optimizer_step / GB:.2f}"
        f" = peak {m.peak / GB:.2f} GB of {job.limit_gb:g}{'' if job.fits else '  EXCEEDS'}"
    )
    for t in job.tokens:
        lines.append(f"  tokens       {t.stage}: {_fmt_opt(t.examples, ',')} examples x {t.epochs:g} epochs x "
                     f"{t.seq_len} = {_fmt_opt(t.tokens, ',.0f')}")  # fmt: skip
        lines += [f"                 {s}" for s in t.sources]
    hours = job.gpu_hours(peak, mfu)
    lines.append(f"  compute      6 x {p.non_embedding:,} x {_fmt_opt(job.total_tokens, ',.0f')} tokens = "
                 f"{_fmt_opt(job.flops, '.3g')} FLOP = {_fmt_hours(hours)} GPU-hours on {name} at "
                 f"{mfu:.0%} MFU ({_fmt_hours(None if hours is None else hours / job.world)} h on "
                 f"{job.world} GPU(s))")  # fmt: skip
    return "\n".join(lines)


def table(jobs: list[JobPlan], gpu: str, mfu: float) -> str:
    name, peak = GPUS[gpu]
    header = ["job", "params", "non-emb", "scale", "GPUs", "mem/GPU GB", "ckpt", "fits", "tokens", "PFLOP",
              f"GPU-h ({name}, {mfu:.0%} MFU)"]  # fmt: skip
    rows = []
    for job in jobs:
        flops, hours = job.flops, job.gpu_hours(peak, mfu)
        rows.append([
            job.label, _fmt_count(job.params.total), _fmt_count(job.params.non_embedding), job.scale,
            str(job.world), f"{job.memory.peak / GB:.1f}", "yes" if job.memory.checkpointing else "no",
            "yes" if job.fits else "NO", "?" if job.total_tokens is None else _fmt_count(job.total_tokens),
            _fmt_opt(None if flops is None else flops / 1e15, ",.0f"), _fmt_hours(hours),
        ])  # fmt: skip
    known = [j.gpu_hours(peak, mfu) for j in jobs]
    total = sum(h for h in known if h is not None)
    unknown = sum(h is None for h in known)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = [" | ".join(c.ljust(w) for c, w in zip(header, widths, strict=True))]
    out.append("-+-".join("-" * w for w in widths))
    out += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    out.append(f"total: {len(jobs)} job(s), {total:,.1f} GPU-hours on {name} at {mfu:.0%} MFU"
               + (f" ({unknown} job(s) with an unknown training-set size not counted)" if unknown else ""))  # fmt: skip
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xlt.plan",
        description="Estimate parameters, memory per GPU, tokens, FLOPs and GPU-hours of a run or a sweep "
        "(the same overrides as xlt.train; nothing is launched).",
    )
    parser.add_argument(
        "-m", "--multirun", action="store_true", help="expand a sweep (+sweep=NAME, a,b lists)"
    )
    parser.add_argument("--gpu", choices=sorted(GPUS), default="h100", help="GPU whose bf16 peak is used")
    parser.add_argument(
        "--mfu", type=float, default=0.4, help="model FLOPs utilisation assumed (default 0.4)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="per-job details under a sweep")
    args, overrides = parser.parse_known_args(argv)
    if not 0 < args.mfu <= 1:
        parser.error(f"--mfu {args.mfu}: expected a fraction in (0, 1]")
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from xlt.config import validate

    try:
        jobs = sweep_jobs(overrides) if args.multirun else [list(overrides)]
        plans = []
        refused = []
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            composed = [compose("train", overrides=job) for job in jobs]
        for i, (job_overrides, cfg) in enumerate(zip(jobs, composed, strict=True), 1):
            # Validate as a CPU run would (no GPU refusal there), then judge the GPU estimate here.
            as_cpu = OmegaConf.merge(cfg, {"trainer": {"accelerator": "cpu"}})
            assert isinstance(as_cpu, DictConfig)
            cfg = validate(as_cpu)
            label = (
                " ".join(o for o in job_overrides if not o.startswith(("+sweep=", "hydra"))) or "(defaults)"
            )
            job = plan_job(cfg, f"{i}: {label}" if args.multirun else label)
            plans.append(job)
            if not job.fits:
                refused.append(job)
    except (ConfigError, HydraException) as err:
        print(f"xlt.plan: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    if not args.multirun and refused:
        print(refused[0].refusal(), file=sys.stderr)
        return 2
    if not args.multirun or args.verbose:
        print("\n\n".join(describe(p, args.gpu, args.mfu) for p in plans))
        print()
    print(table(plans, args.gpu, args.mfu))
    print(
        "\nMemory: arithmetic estimate per GPU (see xlt/plan.py), checked against CPU measurements only. "
        "Tokens: examples x epochs x max_seq_length (an upper bound). FLOPs: 6 x non-embedding parameters "
        "x tokens (training only; evaluation, activation recomputation and attention's seq^2 term not counted)."
    )
    for job in refused:
        print(job.refusal(), file=sys.stderr)
    return 2 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
