"""A run directory belongs to one configuration, and its checkpoints are data, not code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from xlt.orchestration.config_lock import config_differences
from xlt.orchestration.plan_sections import ConfigRecord
from xlt.orchestration.run import run
from xlt.orchestration.rundir import CheckpointError, resume_checkpoint
from xlt.orchestration.weights import load_weights
from xlt.results.rows import read_results
from xlt.schema import ConfigError

TINY = (
    "model=tiny", "+target=xnli", "debug=fdr", "target.train_task=snli", "target.train_split=dev",
    "target.languages=[en,de]", "target.max_train_examples=32", "target.max_eval_examples=16",
    "scale.per_device_batch_size=8", "target.batch_size=8",
)  # fmt: skip


@pytest.mark.slow
def test_a_relaunch_with_other_settings_is_refused_and_resume_false_starts_afresh(
    compose_cfg, data_dir: Path, tmp_path: Path
) -> None:
    run(compose_cfg(*TINY), tmp_path)
    stored = (tmp_path / "config.yaml").read_text()
    with pytest.raises(ConfigError) as err:  # the mixed run: other seed and learning rate
        run(compose_cfg(*TINY, "seed=7", "target.lr=5e-5"), tmp_path)
    line = str(err.value)
    assert "\n" not in line and "seed, target.lr differ from its config.yaml" in line
    with pytest.raises(
        ConfigError, match=r"model\.name"
    ):  # a finished run and another model: not "nothing to do"
        run(compose_cfg(*TINY, "model=e5_small"), tmp_path)
    assert (tmp_path / "config.yaml").read_text() == stored  # untouched by the refused launches
    # keys that change no number may differ
    run(
        compose_cfg(*TINY, "trainer.enable_progress_bar=true", "data.num_workers=0", "predictions=false"),
        tmp_path,
    )
    run(compose_cfg(*TINY, "seed=7", "resume=false"), tmp_path)
    assert OmegaConf.load(tmp_path / "config.yaml").seed == 7
    assert {r["seed"] for r in read_results(tmp_path / "results.jsonl")} == {7}


def test_config_differences_lists_only_result_changing_keys(compose_cfg) -> None:
    from xlt.config import validate
    from xlt.schema import to_container

    cfg = validate(compose_cfg(*TINY))
    stored = to_container(cfg)
    stored["logger"] = {"kind": "wandb"}
    stored["data"] = {**stored["data"], "cache_dir": "/elsewhere", "num_workers": 4}
    stored["scale"] = {**stored["scale"], "checkpoint_every_n_steps": 7, "devices": 2}
    stored["resume"] = False
    assert config_differences(ConfigRecord.of(cfg), stored) == ["scale.devices"]


def test_a_run_stored_before_the_strategy_class_moved_is_the_same_config(compose_cfg) -> None:
    """config.yaml of an FSDP run started before xlt/strategies.py moved to xlt/training/ names the
    old class path: its relaunch is the same configuration; another class is not."""
    from xlt.config import validate
    from xlt.schema import to_container

    cfg = validate(compose_cfg("model=tiny_xl", "+target=xnli"))
    stored = to_container(cfg)
    assert stored["scale"]["strategy"]["_target_"] == "xlt.training.strategies.FSDP"
    stored["scale"]["strategy"]["_target_"] = "xlt.strategies.FSDP"
    assert config_differences(ConfigRecord.of(cfg), stored) == []
    stored["scale"]["strategy"]["_target_"] = "xlt.training.strategies.DDP"
    assert config_differences(ConfigRecord.of(cfg), stored) == ["scale.strategy._target_"]


def _save(path: Path, step: int) -> None:
    torch.save({"global_step": step, "state_dict": {"w": torch.ones(2)}}, path)


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_an_unusable_last_ckpt_falls_back_to_the_previous_one(tmp_path: Path, damage: str, caplog) -> None:
    last, prev = tmp_path / "last.ckpt", tmp_path / "prev.ckpt"
    _save(prev, 3)
    _save(last, 6)
    assert resume_checkpoint(tmp_path) == last
    data = last.read_bytes()
    last.write_bytes(
        {"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"not a zip" * 10}[damage]
    )
    assert resume_checkpoint(tmp_path) == prev
    assert torch.load(prev, weights_only=True)["global_step"] == 3
    assert (tmp_path / "last.ckpt.unusable").is_file() and not last.exists()  # not rotated over prev.ckpt
    assert "is unusable" in caplog.text and str(last) in caplog.text


def test_an_unusable_last_ckpt_without_a_previous_one_says_what_to_delete(tmp_path: Path) -> None:
    (tmp_path / "last.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        resume_checkpoint(tmp_path)
    assert str(tmp_path / "last.ckpt") in str(err.value) and "delete it" in str(err.value)
    assert "\n" not in str(err.value)
    assert resume_checkpoint(tmp_path / "none") is None


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_a_crafted_checkpoint_is_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    crafted = tmp_path / "best.ckpt"
    torch.save({"state_dict": {}, "evil": _Payload(marker)}, crafted)
    with pytest.raises(CheckpointError, match="best.ckpt: not a loadable checkpoint"):
        load_weights(None, crafted)  # type: ignore[arg-type]
    assert not marker.exists()


def test_xlt_evaluate_and_export_read_a_run_stored_before_the_strategy_class_moved(
    compose_cfg, tmp_path: Path
) -> None:
    """A run directory (or export) whose config.yaml names xlt.strategies.FSDP validates again when
    xlt.evaluate / xlt.export read it; a config written now with the old path is refused naming the new."""
    from xlt.config import validate
    from xlt.export import run_config
    from xlt.public_config import public_yaml

    text = public_yaml(validate(compose_cfg("model=tiny_xl", "+target=xnli")))
    assert "_target_: xlt.training.strategies.FSDP" in text
    (tmp_path / "config.yaml").write_text(text.replace("xlt.training.strategies.FSDP", "xlt.strategies.FSDP"))
    stored = run_config(tmp_path)
    assert stored.scale.strategy._target_ == "xlt.training.strategies.FSDP"
    validate(stored)
    with pytest.raises(
        ConfigError, match=r"xlt.strategies.FSDP'?: moved; write xlt.training.strategies.FSDP"
    ):
        validate(compose_cfg("model=tiny_xl", "+target=xnli", "scale.strategy._target_=xlt.strategies.FSDP"))
