"""Memory per GPU of a run's training step: the resident states, the activations of the stage with
the largest batch x length, FSDP's gathered units and the AdamW step's temporaries (term by term in
:func:`estimate_memory`); and the training stages of a run, their members and batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from xlt.plan.model import Architecture, ParamCount, count_parameters, lora_parameters
from xlt.schema import NO_INTERMEDIATE, ConfigError, batch_plan
from xlt.tasks.lengths import seq_length
from xlt.tasks.registry import flatten_mixture, get_mixture, get_task

GB = 1e9
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


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


def activation_bytes_per_layer(
    arch: Architecture, tokens: int, seqs: int, seq_len: int, precision: str, dropout: bool, gpu: bool
) -> float:
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
    in the compute dtype). The AdamW step runs after the activations are freed; the runs use fused AdamW
    (in place: temporaries of the order of the largest tensor, sharded on GPUs), except under fp16's
    GradScaler, where torch's foreach implementation keeps one fp32 copy of the (sharded) parameters.
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
    trainable = _trainable_parameters(cfg, arch, counts)
    weights = counts.total * param_bytes / shards
    gradients = trainable * 4 / shards
    optimizer = trainable * 8 / shards
    compute_bytes = 2 if any(p in precision for p in ("bf16", "16")) else 4
    gathered = _gathered_bytes(counts, scale.strategy, precision, compute_bytes)
    optimizer_step = _optimizer_step_bytes(counts, trainable, shards, precision, hardware)
    best = _largest_activations(cfg, arch, precision, compute_bytes, hardware.gpu)
    if best is None:
        return _retrieval_memory(cfg, arch, counts.total * param_bytes, param_bytes, hardware.gpu, ckpt)
    full, checkpointed, _, stage_name = best
    return MemoryEstimate(
        weights,
        gradients,
        optimizer,
        checkpointed if ckpt else full,
        full,
        checkpointed,
        gathered,
        optimizer_step,
        shards,
        ckpt,
        stage_name,
    )


def _trainable_parameters(cfg: DictConfig, arch: Architecture, counts: ParamCount) -> int:
    """The parameters with gradients and AdamW states: the LoRA adapters, else all but frozen embeddings."""
    if cfg.scale.peft == "lora":
        return lora_parameters(arch, cfg.scale.lora)
    return counts.total - (counts.word_embedding if cfg.model.freeze_embeddings else 0)


def _gathered_bytes(counts: ParamCount, strategy: Any, precision: str, compute_bytes: int) -> float:
    """FSDP's unsharded units during forward/backward (none without sharding): the root unit, two
    layer units (current and prefetched) and their unsharded gradients."""
    if not is_sharded(strategy):
        return 0.0
    # also on one device: FSDP's copies of the units in use.
    # *-mixed gathers fp32 (xlt.training.strategies.PARAM_DTYPE: DDP's numerics); *-true the low dtype.
    gather_bytes = 4 if "mixed" in precision else compute_bytes
    return (2 * counts.outside_layers + 3 * counts.per_layer) * gather_bytes


def _optimizer_step_bytes(
    counts: ParamCount, trainable: int, shards: int, precision: str, hardware: Hardware
) -> float:
    """The AdamW step's temporaries."""
    if hardware.gpu and precision == "16-mixed":
        return trainable * 4 / shards  # torch's foreach AdamW (the module's choice under a GradScaler)
    # Fused AdamW (the module's choice: xlt.modeling.module.adamw_implementation) updates in place;
    # what remains is of the order of the largest tensor, as for CPU's per-tensor loop.
    return max(counts.word_embedding, counts.per_layer) * 4.0 / (shards if hardware.gpu else 1)


def _largest_activations(
    cfg: DictConfig, arch: Architecture, precision: str, compute_bytes: int, gpu: bool
) -> tuple[float, float, float, str] | None:
    """(activations without, with checkpointing, tokens, stage) of the stage whose activations are
    largest; None when no stage trains (a retrieval target)."""
    best: tuple[float, float, float, str] | None = None
    for name, stage in stages(cfg):
        seqs, seq_len = stage_batch(cfg, stage, name)
        tokens = seqs * seq_len
        dropout = not arch.decoder  # XLM-R's hidden/attention dropout 0.1; Qwen2.5: 0
        layer = activation_bytes_per_layer(arch, tokens, seqs, seq_len, precision, dropout, gpu)
        norm = 4 if ("mixed" in precision or compute_bytes == 4) else 2
        mask = (1 if gpu else compute_bytes) if dropout else 0
        # The embeddings' LayerNorm input and dropout mask, and the 4-D padding mask (bool, one for all layers).
        embedding = tokens * arch.hidden * (norm + mask) + seqs * seq_len * seq_len
        full = arch.layers * layer + embedding
        checkpointed = arch.layers * tokens * arch.hidden * norm + layer + embedding
        if best is None or max(full, checkpointed) > max(best[0], best[1]):
            best = (full, checkpointed, tokens, name)
    return best


def _retrieval_memory(
    cfg: DictConfig, arch: Architecture, model_bytes: float, param_bytes: int, gpu: bool, ckpt: bool
) -> MemoryEstimate:
    """A retrieval target trains nothing; its evaluator moves the WHOLE encoder onto the device (not
    sharded, whatever the profile: xlt/evaluation/base.py) and embeds without autocast, in the
    weights' dtype, with ``output_hidden_states=True``: every layer's output (layers + 1 tensors of
    batch x length x hidden) is held until the batch is pooled, plus one layer's working tensors. The
    batch is the larger of the target's embedding batch and the probes' (retrieval.*)."""
    sizes = [(int(cfg.target.eval_batch_size), seq_length(cfg.target))]
    if cfg.get("probe") and cfg.probe.tasks:
        sizes.append((int(cfg.retrieval.batch_size), seq_length(cfg.retrieval)))
    seqs, seq_len = max(sizes, key=lambda size: size[0] * size[1])
    tokens = seqs * seq_len
    precision = "32-true" if param_bytes == 4 else "bf16-true"
    layer = activation_bytes_per_layer(arch, tokens, seqs, seq_len, precision, False, gpu)
    states = (arch.layers + 1) * tokens * arch.hidden * param_bytes
    return MemoryEstimate(
        model_bytes, 0.0, 0.0, states + layer, states + layer, states + layer, 0.0, 0.0, 1, ckpt, "retrieval"
    )


def stages(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    """The training stages of a run: (name, stage config); a retrieval target trains nothing."""
    found = []
    intermediate = cfg.get("intermediate")
    if intermediate is not None and intermediate.name != NO_INTERMEDIATE:
        found.append(("intermediate", intermediate))
    if get_task(cfg.target.name).trainable:
        found.append(("target", cfg.target))
    return found


def choices_of(task: str) -> int:
    """Sequences per example: a multiple-choice example encodes every choice."""
    spec = get_task(task)
    return spec.num_labels if spec.head == "multiple_choice" else 1


def stage_per_device(cfg: DictConfig, stage: DictConfig, name: str) -> tuple[int, int]:
    """(examples per device per forward, gradient accumulation) of a stage."""
    world = cfg.scale.devices * cfg.scale.num_nodes
    try:
        return batch_plan(stage.batch_size, cfg.scale.per_device_batch_size, world)
    except ValueError as err:
        raise ConfigError(f"{name}.batch_size: {err}") from None


def stage_batch(cfg: DictConfig, stage: DictConfig, name: str) -> tuple[int, int]:
    """(sequences per device per forward, sequence length) of a stage at its max_seq_length."""
    per_device, _ = stage_per_device(cfg, stage, name)
    tasks = [t for t, _, _ in stage_members(cfg, stage, name)]
    return per_device * max(map(choices_of, tasks)), seq_length(stage)


def stage_members(cfg: DictConfig, stage: DictConfig, name: str) -> list[tuple[str, str, int | None]]:
    """(task, training split, example cap) of every task a stage trains on."""
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
