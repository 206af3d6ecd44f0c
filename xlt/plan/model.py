"""A model's architecture (from ``conf/model/<model>.yaml``, not the hub) and its parameter counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from xlt.schema import ConfigError


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
        model_type = model.get("expected_model_type")
        if model_type is None and model.get("arch") is not None:
            from xlt.modeling.families import family_of  # the family table: model.arch -> model_type

            try:
                model_type = family_of(model).model_type
            except ValueError as err:
                raise ConfigError(str(err)) from None
        model_type = model_type or "xlm-roberta"
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
    """LoRA adapter parameters: r x (in + out) per Linear a target name matches, per layer."""
    from xlt.modeling.families import family_of_model_type, projection_shapes  # the family table's shapes

    shapes = projection_shapes(family_of_model_type(arch.model_type), arch.hidden, arch.ffn, arch.kv_dim)
    total = 0
    for name in lora.target_modules:
        if name not in shapes:
            raise ConfigError(f"scale.lora.target_modules: {name!r} has no known shape for {arch.model_type}")
        total += sum(lora.r * (n_in + n_out) for n_in, n_out in shapes[name])
    return total * arch.layers


def hf_config(model: DictConfig, **overrides: Any) -> Any:
    """A transformers config for ``model`` built from its YAML alone (no hub): random-init models for
    benchmarks and the parameter-count tests."""
    arch = Architecture.from_model(model)
    common: dict[str, Any] = dict(
        hidden_size=arch.hidden,
        num_hidden_layers=arch.layers,
        num_attention_heads=arch.heads,
        intermediate_size=arch.ffn,
        vocab_size=arch.vocab,
        max_position_embeddings=arch.positions,
    )
    if arch.decoder:
        from transformers import Qwen2Config

        return Qwen2Config(
            **common, num_key_value_heads=arch.kv_heads, tie_word_embeddings=False, **overrides
        )
    from transformers import XLMRobertaConfig, XLMRobertaXLConfig

    cls = XLMRobertaXLConfig if arch.model_type == "xlm-roberta-xl" else XLMRobertaConfig
    # XLM-R's special ids (its tokenizer: <s>=0, <pad>=1, </s>=2).
    return cls(
        **common, type_vocab_size=arch.type_vocab, pad_token_id=1, bos_token_id=0, eos_token_id=2, **overrides
    )
