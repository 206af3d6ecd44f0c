"""Host RAM per rank and checkpoint disk per job: what ``python -m xlt.plan`` prints beside the GPU
memory, and the per-node figure ``scale.host_memory_gb`` (the SLURM request) is filled from.

Per rank, the peak is a base (the Python process with torch, transformers, datasets, the tokenizer
and the featurised data) plus, on CPU runs, the training step's own memory (the model lives in host
RAM there: :func:`xlt.plan.memory.estimate_memory` on CPU), plus the largest of these moments:

- **load**: the pretrained checkpoint file read while the model it fills exists (file + weights).
  Under FSDP (``sync_module_states``) only rank 0 of the job loads; the other ranks build the model
  on the meta device. Under DDP every rank loads. Random-weight models read no file;
- **save, full state dict** (``state_dict_type: full``): rank 0 gathers the whole checkpoint C =
  fp32 weights (4 bytes a parameter) + AdamW's two fp32 states (8 bytes a trainable parameter), and
  Lightning's atomic save serialises it into a buffer before writing: 2 x C on rank 0;
- **save, sharded** (``state_dict_type: sharded``, the FSDP profile's): each rank writes its own
  1/world of C, and holds it twice while it does (Lightning's sharded state dict copies the local
  shards, ``offload_to_cpu=True``, and the distributed-checkpoint writer serialises them): 2 x C /
  world a rank. Measured 2026-12-07 (benchmarks/results/host_memory.md, hidden 512, 2 ranks): with
  C / world the estimate was 0.88 of the measured peak of either rank, with 2 x C / world 1.08;
- **resume**: a full checkpoint is loaded on every rank (Lightning loads the full optimizer state
  with ``rank0_only=False``): C per rank; a sharded one C / world;
- **hand-off**: the next stage (or an export) gets the selected weights as a full state dict on rank 0
  (4 bytes a parameter).

Disk per job: ``last.ckpt`` and ``prev.ckpt`` (C each) while a stage trains, and every stage's
``best.ckpt`` (weights only, 4 bytes a parameter) kept to the end. Sharded checkpoints are the same
bytes split into one file per rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig

from xlt.plan.memory import GB, Hardware, estimate_memory, is_sharded, stages
from xlt.plan.model import Architecture, count_parameters, lora_parameters

# The RSS of an xlt rank besides its model: Python, torch, transformers, datasets, XLM-R's 250k-piece
# tokenizer, a stage's features. Fitted 2026-12-06 on the 2-core CPU machine to two real 2-process
# FSDP runs of a widened tiny model (hidden 256 and 512; benchmarks/results/host_memory.md): peak RSS
# 3.09 and 5.37 GB = 0.9 GB + 0.91 x the model-dependent terms below. 1.0 GB keeps the estimate above.
BASE_BYTES = 1.0e9
# Bytes a parameter in the published checkpoint file: XLM-R XL/XXL ship fp32 pytorch_model.bin
# (XXL: 42.9 GB for 10.7B), Qwen2.5 ships bf16 safetensors.
CHECKPOINT_FILE_BYTES = {"xlm-roberta": 4, "xlm-roberta-xl": 4, "qwen2": 2}
# The SLURM request: the busiest node's estimate plus this share for what the estimate leaves out.
HOST_MARGIN = 0.15


@dataclass
class HostMemory:
    """Bytes. ``rank0`` / ``other``: the peak of rank 0 and of any other rank; ``node``: the first
    node's ranks together (its rank 0 and devices - 1 others): what a SLURM job asks for per node."""

    base: float
    training: float  # CPU runs: the training step's memory (the model is in host RAM); GPU runs: 0
    load_rank0: float
    load_other: float
    checkpoint: float  # C: one resume checkpoint (weights + AdamW states)
    save_rank0: float
    save_other: float
    resume: float
    handoff: float
    sharded_checkpoint: bool
    ranks_per_node: int
    disk: float

    @property
    def rank0(self) -> float:
        return self.base + self.training + max(self.load_rank0, self.save_rank0, self.resume, self.handoff)

    @property
    def other(self) -> float:
        return self.base + self.training + max(self.load_other, self.save_other, self.resume)

    @property
    def node(self) -> float:
        return self.rank0 + (self.ranks_per_node - 1) * self.other

    @property
    def request_gb(self) -> int:
        """``scale.host_memory_gb`` when left null: the node's estimate plus the margin, whole GB."""
        return math.ceil(self.node * (1 + HOST_MARGIN) / GB)

    def describe(self) -> str:
        fmt = "sharded" if self.sharded_checkpoint else "full"
        return (
            f"host RAM/rank  rank 0 {self.rank0 / GB:.1f} GB, others {self.other / GB:.1f} GB (base "
            f"{self.base / GB:.1f}{f' + training {self.training / GB:.1f}' if self.training else ''} + the largest "
            f"of: load {self.load_rank0 / GB:.1f}/{self.load_other / GB:.1f}, {fmt} checkpoint save "
            f"{self.save_rank0 / GB:.1f}/{self.save_other / GB:.1f}, resume {self.resume / GB:.1f}, hand-off "
            f"{self.handoff / GB:.1f}); per node {self.node / GB:.1f} GB -> request {self.request_gb} GB\n"
            f"  disk         checkpoint {self.checkpoint / GB:.1f} GB ({fmt}); peak {self.disk / GB:.1f} GB a job "
            "(last.ckpt + prev.ckpt + every stage's best.ckpt)"
        )


def checkpoint_format(scale: DictConfig) -> str:
    strategy = scale.strategy
    if isinstance(strategy, str):
        return "full"
    return str(strategy.get("state_dict_type") or "full")


def estimate_host(cfg: DictConfig, gpu: bool = True) -> HostMemory:
    """Host RAM per rank and disk of ``cfg`` (see the module docstring, term by term)."""
    arch = Architecture.from_model(cfg.model)
    counts = count_parameters(arch)
    scale = cfg.scale
    params = counts.total
    if scale.peft == "lora":
        trainable = lora_parameters(arch, scale.lora)
    else:
        trainable = params - (counts.word_embedding if cfg.model.freeze_embeddings else 0)
    world = int(scale.devices) * int(scale.num_nodes)
    sharded_training = is_sharded(scale.strategy)
    sharded = checkpoint_format(scale) == "sharded"
    weight_bytes = {"float32": 4, "bfloat16": 2, "float16": 2}[str(cfg.model.dtype)]
    model = params * weight_bytes
    file = params * CHECKPOINT_FILE_BYTES[arch.model_type] if cfg.model.source == "hub" else 0.0
    load_rank0 = file + model
    load_other = 0.0 if sharded_training else load_rank0
    trains = bool(stages(cfg))
    checkpoint = (4.0 * params + 8.0 * trainable) if trains else 0.0
    if sharded:
        save_rank0 = save_other = 2 * checkpoint / world
        resume = checkpoint / world
    else:
        save_rank0, save_other, resume = 2 * checkpoint, 0.0, checkpoint
    training = 0.0 if gpu else estimate_memory(cfg, Hardware(gpu=False)).peak
    n_stages = len(stages(cfg))
    disk = 2 * checkpoint + n_stages * 4.0 * params
    return HostMemory(
        BASE_BYTES,
        training,
        load_rank0,
        load_other,
        checkpoint,
        save_rank0,
        save_other,
        resume,
        4.0 * params if trains else 0.0,
        sharded,
        int(scale.devices),
        disk,
    )
