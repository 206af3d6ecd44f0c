"""Config composition for every model x target, registry <-> conf files, and one-line config errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from xlt import PROJECT_ROOT
from xlt.config import validate
from xlt.schema import ConfigError, group_choices
from xlt.tasks.registry import all_tasks, intermediate_choices

MODELS = group_choices("model")
TARGETS = group_choices("target")
INTERMEDIATES = group_choices("intermediate")


def test_model_group_has_the_promised_sizes() -> None:
    assert {"tiny", "e5_small", "xlmr_base", "xlmr_large", "xlmr_xl", "xlmr_xxl"} <= set(MODELS)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("target", TARGETS)
def test_every_model_and_target_composes(compose_cfg, model: str, target: str) -> None:
    cfg = validate(compose_cfg(f"model={model}", f"+target={target}"))
    assert cfg.model.name == model
    assert cfg.target.name == target
    assert cfg.intermediate is None


@pytest.mark.parametrize("intermediate", INTERMEDIATES)
def test_every_intermediate_composes(compose_cfg, intermediate: str) -> None:
    cfg = validate(compose_cfg(f"+intermediate={intermediate}", "+target=xnli", "model=xlmr_large"))
    assert cfg.intermediate.name == intermediate


def test_conf_files_and_registry_agree_both_ways() -> None:
    tasks = all_tasks()
    for role, files in (("intermediate", INTERMEDIATES), ("target", TARGETS)):
        registered = sorted(name for name, spec in tasks.items() if role in spec.roles)
        if role == "intermediate":  # mixtures (anli = ANLI+, all9) are intermediate stages too
            registered = intermediate_choices()
        assert registered == files, f"conf/{role}/*.yaml and the task registry disagree"
    for name in TARGETS:
        spec = tasks[name]
        if spec.trainable:
            assert spec.train_task in tasks, f"{name}: training source {spec.train_task} is not registered"


def test_model_files_record_hub_id_and_parameter_count(compose_cfg) -> None:
    for model in MODELS:
        cfg = validate(compose_cfg(f"model={model}", "+target=xnli"))
        if cfg.model.source == "hub":
            assert cfg.model.hub_id and cfg.model.params and cfg.model.params > 1e8


def test_target_default_training_source_is_the_xtreme_one(compose_cfg) -> None:
    cfg = validate(compose_cfg("+target=xnli"))
    assert cfg.target.train_task == "mnli"
    cfg = validate(compose_cfg("+target=xnli", "target.train_task=snli"))
    assert cfg.target.train_task == "snli"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("+intermediate=mnli",), "add +target=NAME"),
        (("+target=xnli", "target.train_task=nope"), "valid choices"),
        (("+target=xnli", "target.languages=[en,xx]"), "'xx' is not a language of xnli"),
        (("+target=xnli", "seed=abc"), "'seed'"),
        (("+target=xnli", "+bogus=1"), "'bogus'"),
        (("+target=xnli", "logger.kind=tensorboard"), "logger.kind='tensorboard': expected one of"),
        (("+target=xnli", "+trainer.precision=16"), "trainer.precision: set by the run"),
        (("+target=xnli", "+trainer.not_an_arg=3"), "not an argument of pytorch_lightning.Trainer"),
        (("+target=xnli", "probe.tasks=[xnli]"), "unknown probe task 'xnli'"),
    ],
)
def test_bad_config_is_one_clear_line(compose_cfg, overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(*overrides))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_misspelt_group_lists_choices(compose_cfg) -> None:
    with pytest.raises(MissingConfigException) as err:
        compose_cfg("+target=xnl")
    assert "xnli" in str(err.value)  # Hydra lists the available options


def test_missing_plus_is_explained(compose_cfg) -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg("intermediate=mnli", "+target=xnli")
    assert "+intermediate=mnli" in str(err.value)


def test_cli_bad_input_exits_with_one_line(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "xlt.train", "+target=xnli", "logger.kind=bogus", f"hydra.run.dir={tmp_path}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "logger.kind='bogus': expected one of" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_batch_plan_keeps_the_effective_batch() -> None:
    from xlt.schema import batch_plan

    assert batch_plan(32, 8, 1) == (8, 4)
    assert batch_plan(32, 4, 2) == (4, 4)
    assert batch_plan(16, 32, 1) == (16, 1)  # a smaller task batch lowers the per-device batch
    with pytest.raises(ValueError, match="not a multiple"):
        batch_plan(30, 8, 1)


def test_indivisible_batch_is_a_config_error(compose_cfg) -> None:
    with pytest.raises(ConfigError, match=r"target.batch_size: 30 is not a multiple"):
        validate(compose_cfg("+target=xnli", "target.batch_size=30", "scale.per_device_batch_size=8"))
