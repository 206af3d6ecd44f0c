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
    from xlt.callbacks import Diverged, Preempted
    from xlt.console import quiet_terminal
    from xlt.reuse import ReuseError
    from xlt.run import run
    from xlt.rundir import CheckpointError

    quiet_terminal()  # the terminal gets stage lines, the progress bar and the tables; the log file all

    try:
        sweep_dir = sweep_dir_from_hydra()
        summary = run(cfg, run_dir_from_hydra(), **({"sweep_dir": sweep_dir} if sweep_dir is not None else {}))
    except (ConfigError, DataError, FileNotFoundError) as err:
        # Bad input is the user's to fix: one line on stderr (not the log, which Hydra sends to
        # stdout), no traceback, exit status 2.
        print("error: " + " ".join(str(err).split("\n")), file=sys.stderr, flush=True)
        sys.exit(2)
    except Preempted as stop:
        # Not a success: a sweep, CI job or `&&` chain must see it (Lightning's own SIGTERMException
        # would exit 0). Under submitit, USR2 requeues the job before this (docs/slurm-requeue.md).
        print(f"xlt: {stop.message}", file=sys.stderr, flush=True)
        sys.exit(stop.code)
    except (CheckpointError, ReuseError) as err:
        print(f"xlt: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    except Diverged as err:
        print(f"xlt: {err}", file=sys.stderr, flush=True)
        sys.exit(3)
    from xlt.results.objective import sweep_objective

    return sweep_objective(summary, cfg.target.name)  # the English dev selection metric, never a test score


if __name__ == "__main__":
    main()
