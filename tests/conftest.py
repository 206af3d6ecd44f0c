"""Shared fixtures: the real Hydra config composed with CPU/tiny overrides, the real data directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from xlt.schema import CONF_DIR
from xlt.tasks.loading import default_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data (../shared/data or $XLT_DATA_DIR); tests that need it skip when it is absent."""
    found = default_data_dir()
    if found is None or not found.is_dir():
        pytest.skip("real data not found: set XLT_DATA_DIR or place it at ../shared/data beside the project")
    return found


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache per test session (the converted e5 model is built once, features are cached)."""
    return tmp_path_factory.mktemp("xlt-cache")


@pytest.fixture
def compose_cfg(cache_dir: Path) -> Callable[..., DictConfig]:
    """Compose ``conf/train.yaml`` exactly as the CLI would, plus test-friendly defaults."""

    def _compose(
        *overrides: str, base: tuple[str, ...] = ("logger=none", "trainer.enable_progress_bar=false")
    ) -> DictConfig:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose("train", overrides=[*base, f"data.cache_dir={cache_dir}", *overrides])

    return _compose
