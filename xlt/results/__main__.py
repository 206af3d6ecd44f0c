"""``python -m xlt.results multirun/<sweep> [more dirs] [--out DIR]``: gather every run's
results.jsonl into one table and write the gap-vs-size analysis (CSV files and PNG plots).

Prints the gap-by-size table (markdown) and one line per problem (a job without results, a file
that cannot be read). Exit status 0 when at least one run was read (``--strict``: and no problem),
1 otherwise, 2 for a bad argument.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from xlt.console import check_out_dir, cli_parser, run_cli


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: _main(argv))  # any error: one line on stderr, exit 2


def _main(argv: Sequence[str] | None) -> int:
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
    args = parser.parse_args(argv)
    # pandas and the analysis modules are imported after the arguments: `--help` answers in well under 2 s
    from xlt.results.choice import (
        best_intermediate_on_dev,
        format_best_on_dev,
        format_xstilts_overall,
        xstilts_overall,
    )
    from xlt.results.load import load_sweep
    from xlt.results.stats import gap_by_size, model_families, refusals
    from xlt.results.tables import format_gap_table, format_main_table, format_overall_table, write_tables
    from xlt.results.xtreme_scores import overall_by_size, xtreme_overall

    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"error: {', '.join(map(str, missing))}: no such directory", file=sys.stderr)
        return 2
    out = args.out or args.dirs[0] / "analysis"
    check_out_dir(out, "--out")
    sweep = load_sweep(args.dirs, include_debug=args.include_debug)
    print(f"{len(sweep.run_dirs)} job directories, {sweep.rows['run_dir'].nunique()} with results")
    for problem in sweep.problems:
        print(f"problem: {problem}", file=sys.stderr)
    if sweep.rows.empty:
        print("error: no results to analyse", file=sys.stderr)
        return 1
    paths = write_tables(sweep, out, args.split)
    gaps = gap_by_size(sweep.rows, args.split)
    for line in refusals(sweep.rows, args.split):
        print(line, file=sys.stderr)
    from xlt.results.families import construction_notes

    for line in construction_notes(model_families(sweep.rows)):
        print(line)
    if args.split == "dev" and not gaps.empty:
        print(
            "Dev split: languages other than English are analysis only (target.eval_dev_languages, scored "
            "after selection on the selected checkpoint); nothing is selected or chosen on them."
        )
    if gaps.empty:
        print("no target task with an English score and other languages: no gap to report")
    else:
        print(format_gap_table(gaps))
    overall = xtreme_overall(sweep.rows, args.split)
    if not overall.empty:
        print("\nXTREME-style overall (mean of the task scores; QA (EM+F1)/2) per model, intermediate, seed:")
        print(format_overall_table(overall))
        print("\nMain table: XTREME-style overall per model size and intermediate task (mean over seeds):")
        print(format_main_table(overall_by_size(sweep.rows, args.split)))
    best = best_intermediate_on_dev(sweep.rows, args.split)
    if not best.empty and (best["compared"] != "").any():
        print(
            "\nBest intermediate task per target and model, chosen on the English dev selection metric "
            f"(mean over seeds), with its {args.split} score (XTREME task score) over the languages and seeds it "
            "shares with none. The dev score is the selected checkpoint's on the English dev examples held "
            "out of selection where every compared run has one (dev_heldout)."
        )
        if not best[best["chosen"] != ""]["heldout"].all():
            print(
                "Caution: where 'chosen on' says 'selection subset', runs lack a held-out score and the dev "
                "score is the one the checkpoint was picked on (a maximum over many validations: biased "
                "upwards; docs/analysis.md); treat small dev differences there as ties:"
            )
        print(format_best_on_dev(best, args.split))
        overall = xstilts_overall(best)
        if not overall.empty:
            print(
                f"\nX-STILTs-style overall: mean {args.split} score of the dev-chosen intermediate task and of none, "
                "over the targets where both exist:"
            )
            print(format_xstilts_overall(overall))
    if args.published:
        from xlt.results.published import TOLERANCE, choices_from, compare, format_published

        tolerance = TOLERANCE if args.tolerance is None else args.tolerance
        choices = choices_from(best)  # keyed by the full condition (task, model, peft)
        print()
        print(
            format_published(
                compare(sweep.rows, args.published, args.split, tolerance, choices),
                args.published,
                tolerance,
                args.split,
            )
        )
    if not args.no_plots and not gaps.empty:
        from xlt.results.plots import plot_all

        paths.update({p.stem: p for p in plot_all(gaps, out, x=args.x)})
    print(f"wrote {len(paths)} files to {out}")
    if args.wandb:
        from xlt.results.wandb_report import log_analysis

        log_analysis(paths, args.dirs, out)
    return 1 if args.strict and sweep.problems else 0


if __name__ == "__main__":
    sys.exit(main())
