"""``python -m xlt.results multirun/<sweep> [more dirs] [--out DIR]``: gather every run's
results.jsonl into one table and write the gap-vs-size analysis (CSV files and PNG plots).

Prints the gap-by-size table (markdown) and one line per problem (a job without results, a file
that cannot be read). Exit status 0 when at least one run was read (``--strict``: and no problem),
1 otherwise, 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from xlt.utils.console import cli_parser, run_cli


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: _main(argv))  # any error: one line on stderr, exit 2


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    # pandas and the analysis modules are imported after the arguments: `--help` answers in well under 2 s
    from xlt.results.sweep_report import analyse

    return analyse(args)


def _parser() -> argparse.ArgumentParser:
    parser = cli_parser(
        "python -m xlt.results",
        __doc__.split("\n\n")[0],
        [
            "xlt-results multirun/demo_scale_gap --x params_non_embedding",
            "python -m xlt.results multirun/scale_gap multirun/scale_gap_xnli --out analysis --strict",
            "xlt-results multirun/scale_gap --wandb   # the tables and plots on the sweep's W&B dashboard",
        ],
    )
    parser.add_argument(
        "dirs", nargs="+", type=Path, help="sweep directories (multirun/<sweep>) or run directories"
    )
    parser.add_argument(
        "--out", type=Path, help="where the CSV and PNG files go (default: <first dir>/analysis)"
    )
    parser.add_argument("--split", default="test", help="the target split analysed (default: test)")
    parser.add_argument("--no-plots", action="store_true", help="CSV tables only")
    parser.add_argument(
        "--x",
        default="params",
        choices=("params", "params_non_embedding"),
        help="the size axis of the plots (default: every encoder parameter)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when any run could not be used")
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the tables and plots to one W&B run in the "
        "sweep's group, updated in place on a rerun (xlt/results/wandb_report.py)",
    )
    parser.add_argument(
        "--include-debug",
        action="store_true",
        help="also analyse debug and partial runs (debug=fdr/limit/overfit, trainer.limit_*)",
    )
    parser.add_argument(
        "--published",
        choices=("xtreme", "x-stilts"),
        help="our rows beside the published numbers of the same model, task and metric",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="flag a difference from a published number beyond this many points (default 1.0)",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
