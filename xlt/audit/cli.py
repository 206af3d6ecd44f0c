"""``python -m xlt.audit <overrides>``: the overrides of ``xlt.train``; prints the run's contamination
audit alone (xlt.audit.sets) and exits 1 on an overlap no exclusion covers."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

from omegaconf import DictConfig

from xlt.audit.report import ContaminationError
from xlt.audit.sets import audit, audit_scope
from xlt.config import validate
from xlt.schema import CONF_DIR, ConfigError
from xlt.tasks import hub
from xlt.tasks.loading import resolve_source
from xlt.tasks.spec import DataError
from xlt.utils.console import cli_parser, report_error, run_cli


def compose(overrides: Sequence[str]) -> DictConfig:
    """The validated config ``python -m xlt.train <overrides>`` would run."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(overrides))
    return validate(cfg)


def main(argv: Iterable[str] | None = None) -> int:

    return run_cli(lambda: _main(argv))  # any error: one line on stderr, exit 2


def _main(argv: Iterable[str] | None) -> int:
    from hydra.errors import HydraException

    parser = cli_parser(
        "python -m xlt.audit",
        "Check every set a run would train or select on against every test set of its target\n"
        "(the audit xlt.train runs first) and print the report. Exit 1 on an overlap no exclusion covers.",
        [
            "xlt-audit +target=xnli target.train_task=snli target.train_split=dev",
            "python -m xlt.audit +intermediate=squad +target=xquad   # a documented overlap, excluded",
        ],
    )
    parser.add_argument("overrides", nargs="*", help="the overrides of xlt.train (group=option, key=value)")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv)).overrides
    try:
        cfg = compose(args)
        source, data_dir = resolve_source(cfg.data.source, cfg.data.dir)
        hub.configure_from(cfg.data)  # data.hub_mirror, data.hub_revisions: as a run reads
        report = audit(audit_scope(cfg), source, data_dir)
    except (ConfigError, DataError, FileNotFoundError, HydraException) as err:
        return report_error(err)  # one line (Hydra's own message has several, with the choices)
    print(report.format())
    if report.violations:
        try:
            report.check()
        except ContaminationError as err:
            print(str(err), file=sys.stderr)
        return 1
    return 0
