"""Entry point: ``python -m xlt.train +intermediate=mnli +target=xnli model=xlmr_large``."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import nullcontext

import hydra
from omegaconf import DictConfig, OmegaConf

from xlt.config import register_configs, validate
from xlt.orchestration.plan import build_plan, format_plan
from xlt.results.objective import sweep_objective
from xlt.schema import CONF_DIR, ConfigError
from xlt.training.launch import install, is_multirun, multirun_job, run_dir_from_hydra, sweep_dir_from_hydra
from xlt.utils.console import DEBUG_ENV, debug_requested, quiet_terminal, report_error, run_cli

log = logging.getLogger("xlt")
register_configs()  # intermediate=none, before Hydra composes


# An absolute config path: a relative one is resolved against the calling module, which works under
# `python -m xlt.train` but not from the `xlt-train` console script ("Primary config module 'conf' not found").
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    from xlt.training.callbacks import Diverged, Preempted

    quiet_terminal()  # the terminal gets stage lines, the progress bar and the tables; the log file all

    try:
        show = pop_show(cfg)
        if show is not None:
            print(show_plan(cfg, show), end="")
            return None
        from xlt.orchestration.run import run

        install()  # the other ranks of a multirun job run that job alone
        sweep_dir = sweep_dir_from_hydra()
        with multirun_job() if is_multirun() else nullcontext():
            summary = run(
                cfg, run_dir_from_hydra(), **({"sweep_dir": sweep_dir} if sweep_dir is not None else {})
            )
    except Preempted as stop:
        # Not a success: a sweep, CI job or `&&` chain must see it (Lightning's own SIGTERMException
        # would exit 0). Under submitit, USR2 requeues the job before this (docs/slurm-requeue.md).
        print(f"xlt: {stop.message}", file=sys.stderr, flush=True)
        sys.exit(stop.code)
    except Diverged as err:
        print(f"xlt: {err}", file=sys.stderr, flush=True)
        sys.exit(3)
    except Exception as err:
        # Bad input (config, data, a run directory someone touched) and anything else: one line on
        # stderr (not the log, which Hydra sends to stdout), no traceback (XLT_DEBUG=1 shows it), exit 2.
        if debug_requested():
            raise
        log.debug("the error, with its traceback", exc_info=True)  # the log file keeps it
        sys.exit(report_error(err))

    return sweep_objective(summary, cfg.target.name)  # the English dev selection metric, never a test score


SHOW_CHOICES = ("plan",)


def pop_show(cfg: DictConfig) -> str | None:
    """``+show=plan``: the run's plan printed instead of running it (Hydra's own ``--cfg`` shows the
    composed config); the key is removed so that validation sees the run's config."""
    if "show" not in cfg:
        return None

    OmegaConf.set_struct(cfg, False)
    show = cfg.pop("show")
    if show not in SHOW_CHOICES:
        raise ConfigError(f"show={show!r}: expected one of {', '.join(SHOW_CHOICES)} (e.g. +show=plan)")
    return str(show)


def show_plan(cfg: DictConfig, show: str) -> str:
    """What ``+show=<show>`` prints for ``cfg`` (nothing is trained or written)."""
    return format_plan(build_plan(validate(cfg), run_dir_from_hydra(), sweep_dir_from_hydra()))


def usage() -> str:
    """`--help`: conf/train.yaml's hydra.help header and footer around the config groups, read from conf/
    (Hydra's own --help composes every group twice: 3-9 s on this 2-core machine)."""
    help_cfg = OmegaConf.load(CONF_DIR / "train.yaml").hydra.help
    groups = sorted(
        (str(d.relative_to(CONF_DIR)), sorted(f.stem for f in d.glob("*.yaml")))
        for d in CONF_DIR.rglob("*")
        if d.is_dir() and d.name != "hydra" and "hydra" not in d.relative_to(CONF_DIR).parts
    )
    lines = [help_cfg.header, "Config groups (group=option, or +group=option when not in the defaults):"]
    lines += [f"  {group}: {', '.join(options)}" for group, options in groups if options]
    lines += [
        "",
        "The composed config of a command: add --cfg job (nothing runs); its plan: +show=plan.",
        help_cfg.footer,
    ]
    return "\n".join(lines)


def main() -> None:
    """``python -m xlt.train`` / ``xlt-train``: Hydra's main with a quick ``--help``, and Hydra's own
    errors (an unknown option of a group, a key without its ``+``, bad override syntax) also one line
    and exit 2."""
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(usage())
        return

    if "--debug" in sys.argv[1:]:  # not a Hydra override: the tracebacks switch
        sys.argv.remove("--debug")
        os.environ[DEBUG_ENV] = "1"
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra raises its errors to run_cli (one line)
    sys.exit(run_cli(hydra_main))


main.__wrapped__ = hydra_main.__wrapped__  # type: ignore[attr-defined]  # the job itself (tests/test_sweep.py)


if __name__ == "__main__":
    main()
