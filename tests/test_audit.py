"""The contamination audit (xlt/audit/sets.py) on the real data: SQuAD v1.1 and v2.0 dev against XQuAD,
TyDiQA's English dev (= XTREME's English test), a clean pair, UD-POS's declared exclusion, an
undeclared overlap that stops a run in one line, and a SQuAD -> XQuAD run that records and applies
the exclusion in both stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import xlt.data.datamodule as datamodule
from xlt.audit.fields import normalise
from xlt.audit.keys import text_keys
from xlt.audit.report import ContaminationError
from xlt.audit.sets import audit, audit_scope
from xlt.config import validate
from xlt.orchestration.run import run
from xlt.results.rows import read_results
from xlt.tasks.loading import load_split
from xlt.tasks.registry import get_task

from .test_qa_pipeline import TINY_QA, _tydiqa_dir


def _audit(compose_cfg, *overrides: str, data: Path):
    cfg = validate(compose_cfg("model=tiny", f"data.dir={data}", *overrides))
    return audit(audit_scope(cfg), "local", data)


def _by_set(report) -> dict[str, object]:
    return {f"{s.run_set.stage}/{s.run_set.role}/{s.run_set.name}": s for s in report.sets}


def test_normalisation_matches_retokenised_requoted_recased_copies() -> None:
    assert normalise("Don't “stop” — NAÏVE Ｆｕｌｌ width, 1,000.") == normalise(
        "do n't ``stop'' naïve full width 1000"
    )
    assert normalise("What is the capital?") != normalise("What is the capitol?")
    qa = {"question": "Who won Super Bowl 50?", "context": "The Denver Broncos won Super Bowl 50."}
    other = {"question": "Who lost Super Bowl 50?", "context": qa["context"]}
    assert text_keys(qa) != text_keys(other)  # two questions about one paragraph stay different
    assert text_keys({"words": ["Thank", "you", "."]}) == []  # too short to be evidence: compared by id only


def test_squad_v1_dev_against_xquad_is_the_declared_1190(compose_cfg, data_dir: Path) -> None:
    report = _audit(compose_cfg, "+intermediate=squad", "intermediate.train_split=null", "+target=xquad",
                    "target.train_split=null", data=data_dir)  # fmt: skip
    sets = _by_set(report)
    assert set(sets) == {"intermediate/select/squad/dev", "target/select/xquad/squad_dev"}
    xquad_ids = {ex["id"] for ex in load_split(get_task("xquad"), "test", "en", "local", data_dir).examples}
    for s in sets.values():
        assert (s.examples, s.matched, s.by_id, s.by_text) == (10_570, 1_190, 1_190, 1_190)
        assert s.excluded and "SQuAD v1.1 dev questions" in s.reason
        assert set(s.matched_ids) == xquad_ids and s.per_language["en"] == 1_190
        assert s.record()["kept"] == 9_380
    assert len(report.test_languages) == 11 and set(report.test_languages.values()) == {1_190}
    report.check()  # covered: no error
    removal = report.removals()["squad/dev"]
    dev = load_split(get_task("squad"), "dev", "en", "local", data_dir).examples
    assert sum(not removal.matches(ex) for ex in dev) == 9_380


def test_squad_v2_dev_against_xquad_is_817(compose_cfg, data_dir: Path) -> None:
    report = _audit(compose_cfg, "+intermediate=squad2", "intermediate.train_split=null", "+target=xquad",
                    "target.train_split=null", "target.dev_split=null", data=data_dir)  # fmt: skip
    s = _by_set(report)["intermediate/select/squad2/dev"]
    assert (s.examples, s.matched, s.by_id, s.by_text) == (11_873, 817, 817, 817) and s.excluded


def test_tydiqa_english_dev_is_the_english_test(compose_cfg, data_dir: Path, tmp_path: Path) -> None:
    data = _tydiqa_dir(data_dir, tmp_path / "data")
    clean = _audit(compose_cfg, "+target=tydiqa", "data.source=local", data=data)
    (train,) = clean.sets  # no selection set by default: nothing to leak
    assert train.run_set.name == "tydiqa/train" and train.examples == 1 and train.matched == 0
    assert clean.test_languages == {"en": 1, "ar": 1}
    clean.check()
    # Selecting on TyDiQA's English GoldP dev selects on XTREME's English test: the run must stop.
    leaky = _audit(compose_cfg, "+target=tydiqa", "target.dev_split=test", "data.source=local", data=data)
    with pytest.raises(ContaminationError) as err:
        leaky.check()
    message = str(err.value)
    # (ar 1 too: the English question of this data dir is a copy of the Arabic one, found by its text)
    assert "target select set tydiqa/test shares 1 examples with tydiqa/test (en 1, ar 1)" in message
    assert "\n" not in message


def test_clean_pair_csqa_and_tatoeba(compose_cfg, data_dir: Path) -> None:
    report = _audit(compose_cfg, "+intermediate=csqa", "+target=tatoeba", data=data_dir)
    assert [(s.run_set.name, s.matched) for s in report.sets] == [("csqa/train", 0), ("csqa/dev", 0)]
    assert [s.examples for s in report.sets] == [9_741, 1_221]
    assert len(report.test_languages) == 36 and not report.test_absent
    report.check()


def test_udpos_declares_its_english_repeats(compose_cfg, data_dir: Path) -> None:
    """UD English EWT shares a few sentences between its splits; short ones ("Thank you.") are not
    compared, longer ones are removed by the spec's exclusion (measured: 1 train, 5 dev)."""
    report = _audit(compose_cfg, "+target=udpos", data=data_dir)
    sets = _by_set(report)
    train, dev = sets["target/train/udpos/train"], sets["target/select/udpos/dev"]
    assert (train.examples, train.matched, dev.examples, dev.matched) == (17_500, 1, 3_190, 5)
    assert train.excluded and dev.excluded and train.short > 400
    assert len(report.test_languages) == 33


def _leaky_data_dir(data_dir: Path, root: Path) -> Path:
    """Real files, except that SQuAD's training file is XQuAD's English test (an undeclared overlap)."""
    (root / "squad_v1.1").mkdir(parents=True)
    (root / "squad_v1.1/train-v1.1.json").symlink_to(data_dir / "xquad/xquad.en.json")
    (root / "squad_v1.1/dev-v1.1.json").symlink_to(data_dir / "squad_v1.1/dev-v1.1.explorer.json")
    (root / "xquad").symlink_to(data_dir / "xquad")
    return root


@pytest.mark.slow  # 30-50 s on the shared machine (the audit reads XQuAD in 11 languages and SQuAD dev)
def test_undeclared_overlap_stops_run_before_training(compose_cfg, data_dir: Path, tmp_path: Path) -> None:
    data = _leaky_data_dir(data_dir, tmp_path / "data")
    cfg = compose_cfg(
        *TINY_QA, "+target=xquad", "target.languages=[en]", f"data.dir={data}", "data.source=local"
    )
    with pytest.raises(ContaminationError) as err:
        run(cfg, tmp_path / "run")
    assert str(err.value).startswith("contamination: target train set squad/train shares 1190 examples with "
                                     "xquad/test (en 1190,")  # fmt: skip
    assert "\n" not in str(err.value)
    state = json.loads((tmp_path / "run/state.json").read_text())
    assert "stages" not in state and not (tmp_path / "run/results.jsonl").exists()


@pytest.mark.slow
def test_undeclared_overlap_stops_the_cli_in_one_line(data_dir: Path, tmp_path: Path) -> None:
    data = _leaky_data_dir(data_dir, tmp_path / "data")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "run"
    proc = subprocess.run(  # the CLI as a user runs it
        [sys.executable, "-m", "xlt.train", "+target=xquad", "model=tiny", "logger=none", f"data.dir={data}",
         "data.source=local", f"hydra.run.dir={run_dir}", f"data.cache_dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr  # (Hydra's log handler writes to stdout)
    errors = [line for line in output.splitlines() if "contamination:" in line]
    assert len(errors) == 1, output[-2000:]
    assert "target train set squad/train shares 1190 examples with xquad/test (en 1190" in errors[0]
    assert "no exclusion in xquad's task spec covers squad/train" in errors[0]
    assert "Traceback" not in output
    state = json.loads((run_dir / "state.json").read_text())
    assert "stages" not in state and not state.get("finished")  # nothing trained
    (train,) = [s for s in state["audit"]["sets"] if s["set"] == "squad/train"]
    assert train["overlap"] == 1190 and train["excluded"] == 0


@pytest.mark.slow
def test_squad_to_xquad_run_records_and_applies_the_exclusion(compose_cfg, data_dir: Path, tmp_path: Path,
                                                              monkeypatch) -> None:  # fmt: skip
    """The issue's 'done when': a tiny +intermediate=squad +target=xquad run with debug caps selects on
    the 9,380 SQuAD v1.1 dev questions not in XQuAD, in both stages, and says so in state.json and rows."""
    read: dict[str, list[str]] = {}
    original = datamodule.load_and_featurize

    def spy(spec, head_kind, split, lang, settings, max_len, limit, **kwargs):
        features, loaded = original(spec, head_kind, split, lang, settings, max_len, limit, **kwargs)
        read.setdefault(f"{spec.name}/{split}/{lang}", [str(ex.get("id")) for ex in loaded.examples])
        return features, loaded

    monkeypatch.setattr(datamodule, "load_and_featurize", spy)
    cfg = compose_cfg(*TINY_QA, "+intermediate=squad", "+target=xquad", "target.languages=[en]",
                      "intermediate.batch_size=16", "intermediate.eval_batch_size=16",
                      "intermediate.max_train_examples=32", "intermediate.max_eval_examples=240",
                      "target.max_eval_examples=240")  # fmt: skip
    run(cfg, tmp_path)
    xquad_ids = {ex["id"] for ex in load_split(get_task("xquad"), "test", "en", "local", data_dir).examples}
    first_dev = [
        ex["id"] for ex in load_split(get_task("squad"), "dev", "en", "local", data_dir).examples[:240]
    ]
    assert len(set(first_dev) & xquad_ids) == 4  # without the exclusion the capped selection set has 4
    for name in ("squad/dev/en", "xquad/squad_dev/en"):
        assert len(read[name]) == 240 and not set(read[name]) & xquad_ids
    state = json.loads((tmp_path / "state.json").read_text())
    audit_sets = {s["set"]: s for s in state["audit"]["sets"]}
    for name in ("squad/dev", "xquad/squad_dev"):
        s = audit_sets[name]
        assert (s["examples"], s["excluded"], s["kept"]) == (10_570, 1_190, 9_380)
        assert set(s["excluded_ids"]) == xquad_ids and "XQuAD" in s["excluded_because"]
    rows = read_results(tmp_path / "results.jsonl")
    assert {r["audit_excluded"] for r in rows} == {2_380}
    assert "squad/dev:9380/10570" in rows[0]["audit_sets"]


def test_a_mixture_without_a_member_is_labelled_by_what_it_trained(compose_cfg) -> None:
    from xlt.audit.report import AuditReport, RunSet, SetAudit
    from xlt.audit.sets import mixture_label

    cfg = validate(compose_cfg("model=tiny", "+intermediate=all9", "+target=xnli"))
    present = [SetAudit(RunSet("intermediate", "train", t, "train"), examples=5)
               for t in ("snli", "mnli", "anli_rounds", "qqp", "squad", "squad2", "hellaswag", "cosmosqa", "csqa")]  # fmt: skip
    no_ccg = AuditReport("xnli", "test", {}, [], [*present, SetAudit(RunSet("intermediate", "train", "ccg", "train"),
                                                                     absent="ccg/train/en: no file")])  # fmt: skip
    label, members = mixture_label(audit_scope(cfg), no_ccg)
    assert label == "all9-ccg" and "ccg" not in members and len(members) == 9
    full = AuditReport(
        "xnli", "test", {}, [], [*present, SetAudit(RunSet("intermediate", "train", "ccg", "train"))]
    )
    assert mixture_label(audit_scope(cfg), full)[0] == "all9"
    only = validate(
        compose_cfg("model=tiny", "+intermediate=all9", "+target=xnli", "intermediate.only=[squad,csqa]")
    )
    label, members = mixture_label(audit_scope(only), full)
    assert members == ["squad", "csqa"] and label.startswith("all9-snli-mnli-anli_rounds-qqp-squad2")
    assert (
        mixture_label(
            audit_scope(validate(compose_cfg("model=tiny", "+intermediate=mnli", "+target=xnli"))), full
        )
        is None
    )


@pytest.mark.slow
def test_mixture_run_rows_name_the_members_it_trained(compose_cfg, tmp_path: Path) -> None:
    """ANLI+ offline: MNLI has no training file here, so the run (allowed to skip it) trains SNLI + ANLI
    and says so."""
    cfg = compose_cfg(
        "model=tiny", "debug=fdr", "scale.per_device_batch_size=8", "+intermediate=anli", "+target=xnli",
        "intermediate.skip_members=[mnli]",
        "intermediate.members.snli.train_split=dev", "intermediate.members.anli_rounds.train_split=dev_r1",
        "intermediate.members.anli_rounds.dev_split=dev_r2", "intermediate.max_train_examples=16",
        "intermediate.max_eval_examples=8", "intermediate.batch_size=8", "target.train_task=snli",
        "target.train_split=dev", "target.languages=[en,de]", "target.max_train_examples=16",
        "target.max_eval_examples=8", "target.batch_size=8",
    )  # fmt: skip
    run(cfg, tmp_path)
    rows = read_results(tmp_path / "results.jsonl")
    assert {r["intermediate"] for r in rows} == {"anli-mnli"}
    assert {r["intermediate_members"] for r in rows} == {"snli,anli_rounds"}
    assert {r["intermediate_mixture"] for r in rows} == {"anli"}


@pytest.mark.slow  # reads SQuAD train (30 MB of JSON): 10-35 s on the shared 2-core machine
def test_cli_prints_the_overlap_it_removed(data_dir: Path, capsys) -> None:
    from xlt.audit.cli import main

    assert main(["+intermediate=squad", "+target=xquad", "model=tiny", f"data.dir={data_dir}"]) == 0
    out = capsys.readouterr().out
    assert "against xquad/test in 11 languages (13090 test examples" in out
    for line in ("intermediate select squad/dev", "target       select xquad/squad_dev"):
        (found,) = [x for x in out.splitlines() if line in x]
        assert "10570 examples, 1190 in the test set (en 1190" in found and "excluded -> 9380 kept" in found
    assert "intermediate train  squad/train                87599 examples, no whole-example overlap" in out
    assert "by field: 1 share their question with a test question (en)" in out
    assert main(["+target=nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Could not find 'target/nope'" in err


# ----------------------------------------------------------------------------- per text field (issue 23)


def test_squad_v2_no_answer_questions_on_xquad_paragraphs_are_reported_and_excluded(
    compose_cfg, data_dir: Path
) -> None:
    """SQuAD v2.0 dev writes 882 questions of its own (no-answer ones) on XQuAD's 240 test paragraphs:
    the whole-example audit kept them; the field audit finds them by their context, and the spec's
    exclusion (fields=context) removes them with the 817 shared questions."""
    report = _audit(compose_cfg, "+intermediate=squad2", "intermediate.train_split=null", "+target=xquad",
                    "target.train_split=null", "target.dev_split=null", data=data_dir)  # fmt: skip
    s = _by_set(report)["intermediate/select/squad2/dev"]
    assert s.fields.shared["context"] == 1_699 and s.fields.languages["context"] == {"en"}
    assert (s.matched, s.fields.excluded, s.removed) == (817, 882, 1_699)
    assert s.record()["kept"] == 10_174 and s.record()["excluded_by_field"] == 882
    dev = load_split(get_task("squad2"), "dev", "en", "local", data_dir).examples
    removal = report.removals()["squad2/dev"]
    removed = [ex for ex in dev if removal.matches(ex)]
    assert len(removed) == 1_699
    xquad_ids = {ex["id"] for ex in load_split(get_task("xquad"), "test", "en", "local", data_dir).examples}
    new_questions = [ex for ex in removed if ex["id"] not in xquad_ids]
    assert len(new_questions) == 882 and all(ex["is_impossible"] for ex in new_questions)
    # the old key (id or question + context) let 30 of them into the first 500 selection examples
    assert sum(ex["id"] not in xquad_ids and removal.matches(ex) for ex in dev[:500]) == 30
    assert "(+882 by a shared context) -> 10174 kept" in report.format()


def test_fields_catch_a_test_premise_a_test_sentence_in_a_paragraph_and_no_test_data() -> None:
    from xlt.audit.fields import FieldChecker, FieldIndex

    index = FieldIndex(20)
    index.add(
        "en",
        [
            {"text_a": "The committee met on Tuesday afternoon.", "text_b": "Nobody came.", "label": 0},
            {"words": ["The", "Alps", "provide", "lowland", "Europe", "with", "drinking", "water", "."]},
        ],
    )
    index.add(
        "de", [{"text_a": "Der Ausschuss tagte am Dienstagnachmittag.", "text_b": "Niemand kam.", "label": 0}]
    )
    checker = FieldChecker(index, ())
    checker.check(
        {"text_a": "the committee met on tuesday afternoon", "text_b": "A new hypothesis here.", "label": 1},
        False,
    )
    checker.check({"question": "What do the Alps provide?", "context": "Water matters. The Alps provide lowland "
                   "Europe with drinking water, irrigation and power."}, False)  # fmt: skip
    checker.check(
        {"question": "What do the Alps provide?", "context": "TheAlps provide lowland Europe..."}, False
    )
    result = checker.result
    assert result.shared == {"premise": 1} and result.shared_with["premise"] == {"premise"}
    assert result.inside_examples == 1 and {lang: len(s) for lang, s in result.inside_sentences.items()} == {
        "en": 1
    }
    # found again re-spaced, but never from the middle of a word
    assert index.inside("So the Alpsprovide lowland Europe with drinking-water.")
    assert not index.inside("Prefixthe Alps provide lowland Europe with drinking water")


def test_a_set_audited_against_no_test_data_says_not_checked(
    compose_cfg, data_dir: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "data"
    (empty / "commonsenseqa").mkdir(parents=True)
    for name in ("train_rand_split.jsonl", "dev_rand_split.jsonl"):
        (empty / "commonsenseqa" / name).symlink_to(data_dir / "commonsenseqa" / name)
    report = _audit(compose_cfg, "+intermediate=csqa", "+target=tatoeba", data=empty)
    assert report.test_languages == {} and all(s.not_checked == "no test data" for s in report.sets)
    assert "not checked: no test data" in report.format() and "no overlap" not in report.format()


@pytest.mark.slow  # reads SQuAD v1.1 train (30 MB) and UD test in 33 languages: 30-70 s on the shared machine
def test_ud_english_pud_sentences_inside_squad_paragraphs_are_reported(compose_cfg, data_dir: Path) -> None:
    report = _audit(compose_cfg, "+intermediate=squad", "intermediate.dev_split=null", "+target=udpos",
                    "target.train_split=null", "target.dev_split=null", data=data_dir)  # fmt: skip
    s = _by_set(report)["intermediate/train/squad/train"]
    assert s.matched == 0 and not s.removed  # reported, not removed: no exclusion declares it
    assert {lang: len(v) for lang, v in s.fields.inside_sentences.items()} == {"en": 16}
    assert s.fields.inside_examples == 41  # examples (questions); their distinct paragraphs are fewer
    n = len(s.fields.inside_paragraphs)
    assert 0 < n < 41
    text = report.format()
    assert f"{n} distinct paragraphs (41 examples) hold test sentences (en 16)" in text
    assert "41 paragraphs hold" not in text
    listed = [line for line in text.splitlines() if "test sentence inside a paragraph: en: " in line]
    assert len(listed) == 16  # each one printed, so the count (the issue said 15) can be checked
    report.check()  # a field overlap alone does not stop the run


def test_paragraphs_holding_test_sentences_are_counted_once_and_listed() -> None:
    from xlt.audit.fields import FieldChecker, FieldIndex

    index = FieldIndex(20)
    index.add(
        "en", [{"words": ["The", "Alps", "provide", "lowland", "Europe", "with", "drinking", "water", "."]}]
    )
    checker = FieldChecker(index, ())
    paragraph = "Water matters. The Alps provide lowland Europe with drinking water, irrigation and power."
    for question in ("What do the Alps provide?", "Which mountains provide water?"):
        checker.check({"question": question, "context": paragraph}, False)
    result = checker.result
    assert result.inside_examples == 2 and len(result.inside_paragraphs) == 1
    assert "1 distinct paragraphs (2 examples) hold test sentences (en 1)" in result.describe()
    assert result.sentence_lines() == ["en: The Alps provide lowland Europe with drinking water ."]
    assert result.record()["test_sentences_inside_paragraphs"]["paragraphs"] == 1
