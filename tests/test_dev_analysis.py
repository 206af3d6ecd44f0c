"""Dev scored after selection, never selected on (xlt/evaluation/analysis_dev.py): the English dev
examples held out of the selection subset (``dev_heldout``), on which xlt.results chooses intermediate
tasks, and other languages' dev sets for analysis only (``target.eval_dev_languages``)."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

import pandas as pd
import pytest

from tests.mdtable import md
from tests.test_results_footing import _rows
from xlt.results.choice import best_intermediate_on_dev, xstilts_overall

# The selection subset's maximum ranks anli first; the held-out examples rank mnli first.
TEST = {
    ("none", 1): {"en": 80, "de": 70}, ("none", 2): {"en": 80, "de": 70},
    ("mnli", 1): {"en": 83, "de": 75}, ("mnli", 2): {"en": 83, "de": 75},
    ("anli", 1): {"en": 82, "de": 72}, ("anli", 2): {"en": 82, "de": 72},
}  # fmt: skip
SUBSET = {
    ("none", 1): 80,
    ("none", 2): 80,
    ("mnli", 1): 84,
    ("mnli", 2): 84,
    ("anli", 1): 88,
    ("anli", 2): 86,
}
HELDOUT = {
    ("none", 1): 78,
    ("none", 2): 78,
    ("mnli", 1): 82,
    ("mnli", 2): 81,
    ("anli", 1): 80,
    ("anli", 2): 79,
}


def _with_heldout(rows: pd.DataFrame, heldout: dict, skip: Collection[tuple] = ()) -> pd.DataFrame:
    dev = rows[rows["split"] == "dev"]
    extra = []
    for r in dev.to_dict("records"):
        key = (r["intermediate"], r["seed"])
        if key not in skip:
            extra.append({**r, "split": "dev_heldout", "value": float(heldout[key])})
    return pd.concat([rows, pd.DataFrame.from_records(extra)], ignore_index=True)


def test_the_choice_ranks_on_the_held_out_dev_score_not_the_selection_maximum() -> None:
    rows = _rows(TEST, SUBSET)
    (biased,) = best_intermediate_on_dev(rows).itertuples()
    assert biased.chosen == "anli" and not biased.heldout  # the selection subset's maximum: anli 87 > mnli 84
    assert "biased upwards: 4 of 4 runs have no held-out dev score" in biased.chosen_on
    (row,) = best_intermediate_on_dev(_with_heldout(rows, HELDOUT)).itertuples()
    assert row.chosen == "mnli" and row.heldout and row.chosen_on == "en dev held out of selection, acc"
    assert row.dev_score == pytest.approx(81.5) and row.compared == "mnli 81.50 (n=2), anli 79.50 (n=2)"
    assert row.test_score == pytest.approx(79.0) and row.gain == pytest.approx(4.0)  # mnli's test, paired
    assert (
        xstilts_overall(best_intermediate_on_dev(_with_heldout(rows, HELDOUT))).iloc[0]["choices"]
        == "xnli:mnli"
    )


def test_without_a_held_out_score_for_every_compared_run_the_choice_falls_back_flagged() -> None:
    rows = _with_heldout(_rows(TEST, SUBSET), HELDOUT, skip={("anli", 2)})  # an old run: no held-out row
    (row,) = best_intermediate_on_dev(rows).itertuples()
    assert row.chosen == "anli" and not row.heldout  # never a mix of held-out and subset scores
    assert "selection subset, biased upwards: 1 of 4 runs have no held-out dev score" in row.chosen_on
    # the none runs need no held-out score: they are not ranked
    rows = _with_heldout(_rows(TEST, SUBSET), HELDOUT, skip={("none", 1), ("none", 2)})
    assert best_intermediate_on_dev(rows).iloc[0]["chosen"] == "mnli"


def test_non_english_dev_rows_change_no_choice_and_give_a_gap_on_dev() -> None:
    from xlt.results.stats import gap_by_size

    rows = _with_heldout(_rows(TEST, SUBSET), HELDOUT)
    other = rows[(rows["split"] == "dev") & (rows["language"] == "en")].assign(language="sw", value=99.0)
    more = pd.concat([rows, other.assign(value=[10.0, 10, 99, 99, 10, 10])], ignore_index=True)
    assert best_intermediate_on_dev(more).equals(best_intermediate_on_dev(rows))
    gaps = gap_by_size(more, "dev").set_index("intermediate")
    assert gaps.loc["mnli", "gap_mean"] == pytest.approx(84 - 99) and gaps.loc["mnli", "languages"] == "en,sw"


def test_the_held_out_part_is_the_english_dev_outside_the_drawn_subset(data_dir: Path) -> None:
    from xlt.data.selection import draw_selection, selection_indices
    from xlt.tasks.loading import load_split
    from xlt.tasks.registry import get_task

    loaded = load_split(get_task("xnli"), "dev", "en", "local", data_dir)
    drawn, _ = draw_selection(loaded, 500, 7, "xnli/dev")
    chosen = set(selection_indices(loaded.examples, 500, 7, "xnli/dev"))
    assert [loaded.examples[i] for i in sorted(chosen)] == drawn.examples
    rest = [ex for i, ex in enumerate(loaded.examples) if i not in chosen]
    assert len(rest) == 1_990
    pairs = {(ex["text_a"], ex["text_b"]) for ex in drawn.examples}
    assert not pairs & {(ex["text_a"], ex["text_b"]) for ex in rest}


def test_eval_dev_languages_is_validated_in_one_line(compose_cfg) -> None:
    from xlt.config import ConfigError, validate

    def check(*overrides: str) -> None:
        validate(compose_cfg("model=tiny", *overrides))

    check("+target=xnli", "target.eval_dev_languages=true")
    check("+target=pawsx", "target.eval_dev_languages=[de,fr]")
    with pytest.raises(ConfigError, match=r"xquad has no dev split in other languages"):
        check("+target=xquad", "target.eval_dev_languages=true")
    with pytest.raises(ConfigError, match=r"target.eval_dev_languages: 'xx' is not a language of xnli"):
        check("+target=xnli", "target.eval_dev_languages=[de,xx]")
    with pytest.raises(ConfigError, match=r"target.select_on=train_task: the English dev row is then"):
        check("+target=xnli", "target.eval_dev_languages=true", "target.select_on=train_task")
    with pytest.raises(ConfigError, match=r"target.eval_dev_languages='de': expected false, true or a list"):
        check("+target=xnli", "target.eval_dev_languages=de")


# 48 SNLI pairs, batch 8: 6 optimizer steps an epoch, 2 epochs, validating every 3 on 40 drawn examples.
TINY = (
    "model=tiny", "+target=xnli", "logger=csv", "target.train_task=snli", "target.train_split=dev",
    "target.languages=[en,sw]", "target.max_train_examples=48", "target.max_eval_examples=60",
    "target.batch_size=8", "scale.per_device_batch_size=4", "target.epochs=2", "target.lr=1.0e-3",
    "target.val_check_every=3", "target.val_subset=40", "target.patience=null", "predictions=false",
)  # fmt: skip


def test_a_run_with_dev_languages_selects_the_same_checkpoint_and_chooses_the_same(
    compose_cfg, data_dir: Path, tmp_path: Path
) -> None:
    """Two runs of the same seed, with and without target.eval_dev_languages: the same checkpoint, the
    same English dev and test rows; the run with it has an sw dev row (noted analysis only); both
    have the held-out English dev row (60 of the 2,450 examples outside the 40 drawn)."""
    from xlt.evaluation.analysis_dev import ANALYSIS_NOTE, HELDOUT_NOTE
    from xlt.orchestration.run import run
    from xlt.results.rows import read_results

    run(compose_cfg(*TINY), tmp_path / "off")
    run(compose_cfg(*TINY, "target.eval_dev_languages=true"), tmp_path / "on")
    rows = {d: read_results(tmp_path / d / "results.jsonl") for d in ("off", "on")}
    state = {d: json.loads((tmp_path / d / "state.json").read_text())["stages"]["target"] for d in rows}
    assert Path(state["on"]["best"]).name == Path(state["off"]["best"]).name
    assert state["on"]["selection"] == state["off"]["selection"]

    def kept(d: str, split: str) -> dict:
        return {(r["language"], r["metric"]): r["value"] for r in rows[d]
                if r["split"] == split and r["language"] not in ("avg",)}  # fmt: skip

    assert kept("on", "test") == kept("off", "test")
    assert kept("on", "dev_heldout") == kept("off", "dev_heldout") and ("en", "acc") in kept(
        "on", "dev_heldout"
    )
    dev_on = {r["language"]: r for r in rows["on"] if r["split"] == "dev"}
    dev_off = {r["language"]: r for r in rows["off"] if r["split"] == "dev"}
    assert dev_on["en"]["value"] == dev_off["en"]["value"] and dev_on["en"]["n_examples"] == 40
    assert not dev_on["en"]["note"]
    assert dev_on["sw"]["note"] == ANALYSIS_NOTE and dev_on["sw"]["n_examples"] == 60 and "sw" not in dev_off
    (held,) = [r for r in rows["on"] if r["split"] == "dev_heldout" and r["language"] == "en"]
    assert held["n_examples"] == 60 and held["note"] == HELDOUT_NOTE
    # the choice over both runs' rows: the same (one reads the other's analysis rows as absent)
    frames = {d: pd.DataFrame.from_records(rows[d]) for d in rows}
    assert best_intermediate_on_dev(frames["on"]).equals(best_intermediate_on_dev(frames["off"]))


def test_the_cli_labels_non_english_dev_analysis_only_and_chooses_on_held_out(tmp_path: Path, capsys) -> None:
    """``python -m xlt.results DIR --split dev``: a gap on dev (en and sw dev rows), labelled analysis
    only; the choice is made on the held-out English dev score, without the bias caution."""
    from xlt.evaluation.analysis_dev import ANALYSIS_NOTE, HELDOUT_NOTE
    from xlt.results.__main__ import main
    from xlt.results.rows import ResultRow, RunContext, write_results

    sweep = tmp_path / "sweep"
    for (inter, seed), scores in TEST.items():
        run_dir = sweep / f"intermediate={inter},seed={seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "state.json").write_text('{"finished": true}')
        ctx = RunContext("xlmr_large", 560_000_000, inter, "xnli", "mnli", seed, "fixture", "local",
                         run_dir=run_dir.name)  # fmt: skip
        rows = [ResultRow("target", "xnli", "test", lang, "acc", float(v), 100) for lang, v in scores.items()]
        rows += [
            ResultRow("target", "xnli", "dev", "en", "acc", float(SUBSET[(inter, seed)]), 500),
            ResultRow("target", "xnli", "dev", "sw", "acc", 60.0 + seed, 2490, ANALYSIS_NOTE),
            ResultRow(
                "target",
                "xnli",
                "dev_heldout",
                "en",
                "acc",
                float(HELDOUT[(inter, seed)]),
                1990,
                HELDOUT_NOTE,
            ),
        ]
        write_results(run_dir / "results.jsonl", rows, ctx)
    assert main([str(sweep), "--split", "dev", "--no-plots", "--out", str(tmp_path / "out")]) == 0
    out = md(capsys.readouterr().out)
    assert "languages other than English are analysis only" in out
    assert "| xnli | acc | mnli |" in out  # the gap on dev: en and sw
    assert "| xnli | xlmr_large | target | mnli | en dev held out of selection, acc | 81.50 |" in out
    assert "biased upwards" not in out
