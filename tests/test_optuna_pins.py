"""The Optuna extra (pyproject.toml `optuna`, also in `dev`): its pins are what is installed, optuna
2.10.1 runs with the pinned SQLAlchemy (the sweeper's in-memory study, and a sqlite one), and the
sweep config gives each study its own folder."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

from tests.test_readme import require_optuna
from xlt import PROJECT_ROOT


def extra(name: str) -> list[str]:
    data = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    return list(data["project"]["optional-dependencies"][name])


def test_dev_extra_includes_the_optuna_extra() -> None:
    assert "xlt[optuna]" in extra("dev")


def test_pins_are_installed_and_optuna_runs_with_the_pinned_sqlalchemy() -> None:
    require_optuna()
    pins = dict(re.fullmatch(r"([\w.-]+)==([\w.]+)", pin).groups() for pin in extra("optuna"))  # type: ignore[union-attr,misc]
    assert {"optuna", "SQLAlchemy", "hydra-optuna-sweeper"} <= pins.keys()
    assert {name: version(name) for name in pins} == pins
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for storage in (None, "sqlite:///:memory:"):  # the sweeper's default (storage: null), and RDB
        study = optuna.create_study(direction="maximize", storage=storage,
                                    sampler=optuna.samplers.TPESampler(seed=42))  # fmt: skip
        study.optimize(lambda trial: -((trial.suggest_float("x", -1, 1) - 0.5) ** 2), n_trials=4)
        assert len(study.trials) == 4 and study.best_value <= 0


def test_each_study_gets_its_own_folder() -> None:
    """A fixed multirun/optuna_lr would let a second study write over (and Hydra's sweeper reuse the
    numbering of) the first's trials; the folder carries the start time."""
    import yaml

    config = yaml.safe_load((PROJECT_ROOT / "conf" / "sweep" / "optuna_lr.yaml").read_text())
    sweep_dir = str(config["hydra"]["sweep"]["dir"])
    assert sweep_dir.startswith("multirun/${sweep.name}/") and "${now:" in sweep_dir
