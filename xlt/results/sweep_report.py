"""What ``python -m xlt.results`` does once its arguments are parsed: load the sweep, write the CSV
tables and plots, and print the report one section at a time (what was read, the gap by size, the
XTREME-style overall, the intermediate task chosen on English dev, the published numbers beside ours).

pandas and the analysis modules are imported here, after the arguments (``--help`` answers in well
under 2 s); matplotlib and wandb only when plotting or logging.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from xlt.results.choice import (
    best_intermediate_on_dev,
    format_best_on_dev,
    format_xstilts_overall,
    xstilts_overall,
)
from xlt.results.families import construction_notes
from xlt.results.load import Sweep, load_sweep
from xlt.results.published import TOLERANCE, choices_from, compare, format_published
from xlt.results.stats import gap_by_size, model_families, refusals
from xlt.results.tables import format_gap_table, format_main_table, format_overall_table, write_tables
from xlt.results.xtreme_scores import overall_by_size, xtreme_overall
from xlt.utils.console import check_out_dir


def analyse(args: argparse.Namespace) -> int:
    """The analysis of ``args.dirs``: 0 when at least one run was read (``--strict``: and no
    problem), 1 otherwise, 2 for a directory that does not exist."""
    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"error: {', '.join(map(str, missing))}: no such directory", file=sys.stderr)
        return 2
    out = args.out or args.dirs[0] / "analysis"
    check_out_dir(out, "--out")
    sweep = load_sweep(args.dirs, include_debug=args.include_debug)
    print_what_was_read(sweep)
    if sweep.rows.empty:
        print("error: no results to analyse", file=sys.stderr)
        return 1
    paths = write_tables(sweep, out, args.split)
    gaps = gap_by_size(sweep.rows, args.split)
    print_gaps(sweep.rows, gaps, args.split)
    print_xtreme_overall(sweep.rows, args.split)
    best = best_intermediate_on_dev(sweep.rows, args.split)
    print_best_on_dev(best, args.split)
    if args.published:
        print_published(sweep.rows, best, args.published, args.split, args.tolerance)
    if not args.no_plots and not gaps.empty:
        from xlt.results.plots import plot_all  # matplotlib: only when plotting

        paths.update({p.stem: p for p in plot_all(gaps, out, x=args.x)})
    print(f"wrote {len(paths)} files to {out}")
    if args.wandb:
        from xlt.results.wandb_report import log_analysis  # wandb: only when logging

        log_analysis(paths, args.dirs, out)
    return 1 if args.strict and sweep.problems else 0


def print_what_was_read(sweep: Sweep) -> None:
    """How many job directories were found and read; one line on stderr per problem."""
    print(f"{len(sweep.run_dirs)} job directories, {sweep.rows['run_dir'].nunique()} with results")
    for problem in sweep.problems:
        print(f"problem: {problem}", file=sys.stderr)


def print_gaps(rows: pd.DataFrame, gaps: pd.DataFrame, split: str) -> None:
    """The gap-by-size table, after the comparisons refused (stderr) and what differs between the
    model families compared by construction."""
    for line in refusals(rows, split):
        print(line, file=sys.stderr)
    for line in construction_notes(model_families(rows)):
        print(line)
    if split == "dev" and not gaps.empty:
        print(
            "Dev split: languages other than English are analysis only (target.eval_dev_languages, scored "
            "after selection on the selected checkpoint); nothing is selected or chosen on them."
        )
    if gaps.empty:
        print("no target task with an English score and other languages: no gap to report")
    else:
        print(format_gap_table(gaps))


def print_xtreme_overall(rows: pd.DataFrame, split: str) -> None:
    """XTREME's overall per run family and the main table by model size (nothing without one)."""
    overall = xtreme_overall(rows, split)
    if overall.empty:
        return
    print("\nXTREME-style overall (mean of the task scores; QA (EM+F1)/2) per model, intermediate, seed:")
    print(format_overall_table(overall))
    print("\nMain table: XTREME-style overall per model size and intermediate task (mean over seeds):")
    print(format_main_table(overall_by_size(rows, split)))


def print_best_on_dev(best: pd.DataFrame, split: str) -> None:
    """The intermediate task chosen on English dev per target and model, and the X-STILTs-style
    overall of those choices (nothing when no intermediate task was compared)."""
    if best.empty or not (best["compared"] != "").any():
        return
    print(
        "\nBest intermediate task per target and model, chosen on the English dev selection metric "
        f"(mean over seeds), with its {split} score (XTREME task score) over the languages and seeds it "
        "shares with none. The dev score is the selected checkpoint's on the English dev examples held "
        "out of selection where every compared run has one (dev_heldout)."
    )
    if not best[best["chosen"] != ""]["heldout"].all():
        print(
            "Caution: where 'chosen on' says 'selection subset', runs lack a held-out score and the dev "
            "score is the one the checkpoint was picked on (a maximum over many validations: biased "
            "upwards; docs/analysis.md); treat small dev differences there as ties:"
        )
    print(format_best_on_dev(best, split))
    overall = xstilts_overall(best)
    if not overall.empty:
        print(
            f"\nX-STILTs-style overall: mean {split} score of the dev-chosen intermediate task and of none, "
            "over the targets where both exist:"
        )
        print(format_xstilts_overall(overall))


def print_published(
    rows: pd.DataFrame, best: pd.DataFrame, source: str, split: str, tolerance: float | None
) -> None:
    """Our rows beside ``source``'s published numbers, a difference beyond ``tolerance`` flagged."""
    tolerance = TOLERANCE if tolerance is None else tolerance
    choices = choices_from(best)  # keyed by the full condition (task, model, peft)
    print()
    print(format_published(compare(rows, source, split, tolerance, choices), source, tolerance, split))
