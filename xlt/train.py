"""Entry point: ``python -m xlt.train +intermediate=mnli +target=xnli model=xlmr_large``."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from xlt.config import ConfigError, run_dir_from_hydra, sweep_dir_from_hydra
from xlt.tasks.spec import DataError

log = logging.getLogger("xlt")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from xlt.run import run

    try:
        summary = run(cfg, run_dir_from_hydra(), sweep_dir_from_hydra())
    except (ConfigError, DataError, FileNotFoundError) as err:
        # Bad input is the user's to fix: one line on stderr (not the log, which Hydra sends to
        # stdout), no traceback, exit status 2.
        print("error: " + " ".join(str(err).split("\n")), file=sys.stderr, flush=True)
        sys.exit(2)
    from xlt.results.objective import sweep_objective

    return sweep_objective(summary, cfg.target.name)  # the English dev selection metric, never a test score


if __name__ == "__main__":
    main()
