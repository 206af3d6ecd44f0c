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

- :mod:`xlt.plan.model`: the architecture of ``conf/model/<model>.yaml`` and its parameter counts;
- :mod:`xlt.plan.memory`: a run's training stages and the memory per GPU of its largest step;
- :mod:`xlt.plan.jobs`: training tokens, FLOPs, GPU-hours, one job's plan and the GPU-memory check;
- :mod:`xlt.plan.cli`: sweep expansion and what ``python -m xlt.plan`` prints (not imported here:
  it validates configs with :mod:`xlt.config`, whose validation imports :mod:`xlt.plan.jobs`).
"""

from xlt.plan.jobs import (
    GPUS,
    JobPlan,
    StageTokens,
    check_gpu_memory,
    plan_job,
    stage_tokens,
    training_set_size,
    will_use_gpu,
)
from xlt.plan.memory import (
    DTYPE_BYTES,
    GB,
    Hardware,
    MemoryEstimate,
    activation_bytes_per_layer,
    choices_of,
    estimate_memory,
    is_sharded,
    resolve_precision,
    stage_batch,
    stage_members,
    stages,
    uses_activation_checkpointing,
)
from xlt.plan.model import Architecture, ParamCount, count_parameters, hf_config, lora_parameters

__all__ = [
    "DTYPE_BYTES",
    "GB",
    "GPUS",
    "Architecture",
    "Hardware",
    "JobPlan",
    "MemoryEstimate",
    "ParamCount",
    "StageTokens",
    "activation_bytes_per_layer",
    "check_gpu_memory",
    "choices_of",
    "count_parameters",
    "estimate_memory",
    "hf_config",
    "is_sharded",
    "lora_parameters",
    "plan_job",
    "resolve_precision",
    "stage_batch",
    "stage_members",
    "stage_tokens",
    "stages",
    "training_set_size",
    "uses_activation_checkpointing",
    "will_use_gpu",
]
