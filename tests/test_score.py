"""``python -m xlt.score`` on small submission folders built in tmp_path.

Every language of a task gets the same small files, except the first language, which gets
perfect predictions; so each task average is ``(100 + (n - 1) * s) / n`` with ``s`` computed by hand
below, and the aggregation rules of evaluate.py (avg per metric, QA (EM + F1) / 2, group means,
all_task) can be checked exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from xlt.metrics.xtreme import XTREME_TASK2LANGS
from xlt.score import main, score_submission

SQUAD_LABELS = {
    "version": "1.1",
    "data": [
        {
            "title": "t",
            "paragraphs": [
                {
                    "context": "The Denver Broncos beat the Carolina Panthers in Santa Clara.",
                    "qas": [
                        {
                            "id": "q1",
                            "question": "?",
                            "answers": [{"text": "Denver Broncos", "answer_start": 4}],
                        },
                        {
                            "id": "q2",
                            "question": "?",
                            "answers": [{"text": "the Carolina Panthers", "answer_start": 24}],
                        },
                    ],
                }
            ],
        }
    ],
}
SQUAD_GOLD = {"q1": "Denver Broncos", "q2": "the Carolina Panthers"}


def _tags(sentences: list[list[str]]) -> str:
    return "\n\n".join("\n".join(s) for s in sentences) + "\n"


# task -> (label text, imperfect prediction text, perfect prediction text); suffix from the task.
FILES: dict[str, tuple[str, str, str]] = {
    # 3 of 4 right -> 75
    "pawsx": ("1\n0\n1\n1\n", "1\n1\n1\n1\n", "1\n0\n1\n1\n"),
    # 2 of 4 right -> 50
    "xnli": (
        "entailment\nneutral\ncontradiction\nentailment\n",
        "entailment\nentailment\ncontradiction\nneutral\n",
        "entailment\nneutral\ncontradiction\nentailment\n",
    ),
    # gold chunks NOUN(0-2), DET, NOUN = 3; pred NOUN(0-1), VERB, DET, NOUN = 4; correct 2 -> F1 4/7
    "udpos": (
        _tags([["NOUN", "NOUN", "NOUN"], ["DET", "NOUN"]]),
        _tags([["NOUN", "NOUN", "VERB"], ["DET", "NOUN"]]),
        _tags([["NOUN", "NOUN", "NOUN"], ["DET", "NOUN"]]),
    ),
    # PER right, LOC predicted as ORG -> P = R = F1 = 1/2
    "panx": (
        _tags([["B-PER", "I-PER", "O", "B-LOC"]]),
        _tags([["B-PER", "I-PER", "O", "B-ORG"]]),
        _tags([["B-PER", "I-PER", "O", "B-LOC"]]),
    ),
    # 4 gold, 3 predicted, 2 right: P 2/3, R 1/2, F1 4/7
    "bucc2018": (
        "x-1\ten-1\nx-2\ten-2\nx-3\ten-3\nx-4\ten-4\n",
        "x-1\ten-1\nx-2\ten-2\nx-7\ten-9\n",
        "x-1\ten-1\nx-2\ten-2\nx-3\ten-3\nx-4\ten-4\n",
    ),
    # 4 of 5 right -> 80
    "tatoeba": ("3\n0\n4\n1\n2\n", "3\n0\n4\n1\n1\n", "3\n0\n4\n1\n2\n"),
    # q1 exact; q2 "Carolina" vs "carolina panthers": P 1, R 1/2, F1 2/3 -> EM 50, F1 (1 + 2/3)/2
    "xquad": (
        json.dumps(SQUAD_LABELS),
        json.dumps({"q1": "Denver Broncos", "q2": "Carolina"}),
        json.dumps(SQUAD_GOLD),
    ),
    "tydiqa": (
        json.dumps(SQUAD_LABELS),
        json.dumps({"q1": "Denver Broncos", "q2": "Carolina"}),
        json.dumps(SQUAD_GOLD),
    ),
    # MLQA normalisation per language; "Denver Broncos." is exact after punctuation removal; q2 missing
    "mlqa": (json.dumps(SQUAD_LABELS), json.dumps({"q1": "Denver Broncos."}), json.dumps(SQUAD_GOLD)),
}

# Hand-computed per-language score of the imperfect prediction, per metric.
IMPERFECT = {
    "pawsx": {"accuracy": 75.0},
    "xnli": {"accuracy": 50.0},
    "udpos": {"f1": 400 / 7, "precision": 50.0, "recall": 200 / 3},
    "panx": {"f1": 50.0, "precision": 50.0, "recall": 50.0},
    "bucc2018": {"f1": 400 / 7, "precision": 200 / 3, "recall": 50.0},
    "tatoeba": {"accuracy": 80.0},
    "xquad": {"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 2},
    "tydiqa": {"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 2},
    "mlqa": {"exact_match": 50.0, "f1": 50.0},
}


def _suffix(task: str) -> str:
    return "json" if task in ("xquad", "mlqa", "tydiqa") else "tsv"


def build_submission(root: Path, tasks: list[str] | None = None) -> tuple[Path, Path]:
    pred_dir, label_dir = root / "predictions", root / "labels"
    for task in tasks or list(XTREME_TASK2LANGS):
        label, imperfect, perfect = FILES[task]
        for d in (pred_dir / task, label_dir / task):
            d.mkdir(parents=True)
        for i, lang in enumerate(XTREME_TASK2LANGS[task]):
            name = f"test-{lang}.{_suffix(task)}"
            (label_dir / task / name).write_text(label, encoding="utf-8")
            (pred_dir / task / name).write_text(perfect if i == 0 else imperfect, encoding="utf-8")
    return pred_dir, label_dir


def expected_average(task: str, metric: str) -> float:
    n = len(XTREME_TASK2LANGS[task])
    return (100.0 + (n - 1) * IMPERFECT[task][metric]) / n


def expected_task_score(task: str) -> float:
    if task in ("xquad", "mlqa", "tydiqa"):
        return (expected_average(task, "exact_match") + expected_average(task, "f1")) / 2
    return expected_average(task, "accuracy" if "accuracy" in IMPERFECT[task] else "f1")


def test_full_submission_matches_hand_computation(tmp_path: Path) -> None:
    pred_dir, label_dir = build_submission(tmp_path)
    scores = score_submission(pred_dir, label_dir)
    assert not scores.problems and not scores.incomplete
    assert list(scores.tasks) == list(XTREME_TASK2LANGS)  # evaluate.py's order
    for task, result in scores.tasks.items():
        first, *rest = XTREME_TASK2LANGS[task]
        for metric, value in IMPERFECT[task].items():
            assert result[metric][first] == pytest.approx(100.0, abs=1e-12)
            assert all(result[metric][lang] == pytest.approx(value, abs=1e-12) for lang in rest)
            assert result[f"avg_{metric}"] == pytest.approx(expected_average(task, metric), abs=1e-9)
        assert result["avg_metric"] == pytest.approx(expected_task_score(task), abs=1e-9)
        # the official key layout: per-metric dicts, then avg_<metric>s, then avg_metric
        assert list(result) == [*IMPERFECT[task], *(f"avg_{m}" for m in IMPERFECT[task]), "avg_metric"]
    task_scores = {t: expected_task_score(t) for t in XTREME_TASK2LANGS}
    assert scores.overall == pytest.approx(
        {
            "all_task": sum(task_scores.values()) / 9,
            "classification": (task_scores["pawsx"] + task_scores["xnli"]) / 2,
            "tagging": (task_scores["udpos"] + task_scores["panx"]) / 2,
            "qa": (task_scores["xquad"] + task_scores["mlqa"] + task_scores["tydiqa"]) / 3,
            "retrieval": (task_scores["bucc2018"] + task_scores["tatoeba"]) / 2,
        },
        abs=1e-9,
    )
    assert list(scores.overall) == ["all_task", "classification", "tagging", "qa", "retrieval"]
    assert scores.subset_overall["tasks"] == list(XTREME_TASK2LANGS)
    assert scores.subset_overall["avg_metric"] == pytest.approx(scores.overall["all_task"], abs=1e-12)


def test_cli_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, label_dir = build_submission(tmp_path, ["pawsx", "xnli", "udpos"])
    out_file = tmp_path / "scores.json"
    assert main(["--predictions", str(pred_dir), "--labels", str(label_dir), "--output", str(out_file)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(out_file.read_text())
    assert set(report["tasks"]) == {"pawsx", "xnli", "udpos"}
    # classification is complete; tagging lacks panx; all_task needs all nine
    assert report["overall"] == pytest.approx(
        {"classification": (expected_task_score("pawsx") + expected_task_score("xnli")) / 2}
    )
    assert main(["--predictions", str(pred_dir), "--labels", str(label_dir), "--format", "table"]) == 0
    table = capsys.readouterr().out
    assert "== xnli: avg_metric 53.33" in table  # (100 + 14 * 50) / 15
    assert "classification" in table
    # an overall over the three tasks that ran, naming them (not XTREME's nine-task all_task)
    subset = (expected_task_score("pawsx") + expected_task_score("xnli") + expected_task_score("udpos")) / 3
    assert report["subset_overall"]["tasks"] == ["pawsx", "xnli", "udpos"]
    assert report["subset_overall"]["avg_metric"] == pytest.approx(subset, abs=1e-9)
    assert f"== overall over 3 of 9 tasks (pawsx, xnli, udpos): {subset:.2f}" in table


def test_tasks_option_and_unknown_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, label_dir = build_submission(tmp_path, ["pawsx", "tatoeba"])
    assert main(["--predictions", str(pred_dir), "--labels", str(label_dir), "--tasks", "tatoeba"]) == 0
    assert list(json.loads(capsys.readouterr().out)["tasks"]) == ["tatoeba"]
    assert main(["--predictions", str(pred_dir), "--labels", str(label_dir), "--tasks", "xnlii"]) == 2
    assert "unknown task(s) xnlii" in capsys.readouterr().err
    # a requested task without folders is reported, not dropped
    assert main(["--predictions", str(pred_dir), "--labels", str(label_dir), "--tasks", "xnli"]) == 1
    assert "missing task folder" in capsys.readouterr().err


def test_missing_language_file_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, label_dir = build_submission(tmp_path, ["pawsx", "xnli"])
    (pred_dir / "xnli/test-de.tsv").unlink()
    (label_dir / "xnli/test-sw.tsv").unlink()
    assert main(["--predictions", str(pred_dir), "--labels", str(label_dir)]) == 1
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert f"missing file: {pred_dir / 'xnli/test-de.tsv'}" in err_lines
    assert f"missing file: {label_dir / 'xnli/test-sw.tsv'}" in err_lines
    report = json.loads(captured.out)
    assert report["incomplete"] == {"xnli": ["de", "sw"]}
    assert "de" not in report["tasks"]["xnli"]["accuracy"] and len(report["tasks"]["xnli"]["accuracy"]) == 13
    assert "classification" not in report["overall"]  # an incomplete task never enters a group score


def test_split_dev_scores_dev_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--split dev`` reads ``dev-{lang}`` files, e.g. BUCC pairs mined on the only split with gold."""
    pred_dir, label_dir = tmp_path / "pred" / "bucc2018", tmp_path / "labels" / "bucc2018"
    pred_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    # 2 of 3 predicted pairs are gold, 2 of 4 gold pairs found: P 2/3, R 1/2, F1 4/7.
    (label_dir / "dev-de.tsv").write_text(
        "de-1\ten-1\nde-2\ten-2\nde-3\ten-3\nde-4\ten-4\n", encoding="utf-8"
    )
    (pred_dir / "dev-de.tsv").write_text("de-1\ten-1\nde-2\ten-2\nde-3\ten-9\n", encoding="utf-8")
    argv = ["--predictions", str(tmp_path / "pred"), "--labels", str(tmp_path / "labels")]
    assert main([*argv, "--split", "dev"]) == 1  # fr, ru, zh have no files
    report = json.loads(capsys.readouterr().out)
    assert report["tasks"]["bucc2018"]["f1"] == {"de": pytest.approx(100 * 4 / 7, abs=1e-9)}
    assert report["incomplete"] == {"bucc2018": ["fr", "ru", "zh"]}
    assert main(argv) == 1  # the default split is test, as evaluate.py: nothing to score here
    assert "bucc2018" not in json.loads(capsys.readouterr().out)["tasks"]


@pytest.mark.parametrize(
    ("task", "bad", "message"),
    [
        ("xnli", "entailment\n", "1 lines, expected 4"),
        ("udpos", _tags([["NOUN", "NOUN", "VERB"]]), "1 sentences (blank-line separated), expected 2"),
        ("udpos", _tags([["NOUN", "NOUN"], ["DET", "NOUN"]]), "sentence 1 (line 1) has 2 tags, expected 3"),
        (
            "panx",
            _tags([["B-PER", "I-PER", "O", "B-ORG", "O"]]),
            "sentence 1 (line 1) has 5 tags, expected 4",
        ),
        ("xquad", "{not json", "not valid JSON"),
        ("mlqa", '["q1"]', "expected a JSON object"),
    ],
)
def test_bad_file_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str, bad: str, message: str
) -> None:
    pred_dir, label_dir = build_submission(tmp_path, [task])
    lang = XTREME_TASK2LANGS[task][1]
    path = pred_dir / task / f"test-{lang}.{_suffix(task)}"
    path.write_text(bad, encoding="utf-8")
    assert main(["--predictions", str(pred_dir), "--labels", str(label_dir)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note: ")]
    assert len(err) == 1
    assert err[0].startswith(f"bad file: {path}:") and message in err[0]


def test_unanswered_questions_are_noted_per_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, label_dir = build_submission(tmp_path, ["mlqa"])
    assert main(["--predictions", str(pred_dir), "--labels", str(label_dir)]) == 0  # official: scored 0
    err = capsys.readouterr().err.splitlines()
    assert f"note: {pred_dir / 'mlqa/test-es.json'}: 1 questions unanswered, scored 0 (e.g. q2)" in err
    assert len(err) == len(XTREME_TASK2LANGS["mlqa"]) - 1


def test_unrelated_and_one_sided_folders_are_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred_dir, label_dir = build_submission(tmp_path, ["pawsx"])
    (label_dir / "xnli").mkdir()
    (pred_dir / "notes").mkdir()
    assert main(["--predictions", str(pred_dir), "--labels", str(label_dir)]) == 0
    err = capsys.readouterr().err
    assert "note: task xnli: folder only in labels, not scored" in err
    assert "note: folder 'notes' is not an XTREME task, ignored" in err


def test_real_xquad_labels(tmp_path: Path, data_dir: Path) -> None:
    # Real XQuAD files as labels; predictions are the gold answers with the last word dropped.
    pred_dir, label_dir = tmp_path / "pred" / "xquad", tmp_path / "labels" / "xquad"
    pred_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    for lang in XTREME_TASK2LANGS["xquad"]:
        src = data_dir / f"xquad/xquad.{lang}.json"
        shutil.copy(src, label_dir / f"test-{lang}.json")
        data = json.loads(src.read_text(encoding="utf-8"))["data"]
        preds = {
            qa["id"]: " ".join(qa["answers"][0]["text"].split()[:-1]) or qa["answers"][0]["text"]
            for a in data
            for p in a["paragraphs"]
            for qa in p["qas"]
        }
        (pred_dir / f"test-{lang}.json").write_text(json.dumps(preds, ensure_ascii=False), encoding="utf-8")
    scores = score_submission(tmp_path / "pred", tmp_path / "labels")
    result = scores.tasks["xquad"]
    assert set(result["f1"]) == set(XTREME_TASK2LANGS["xquad"])
    # zh/th answers have no spaces, so dropping "the last word" keeps most of them intact: high EM
    assert result["exact_match"]["zh"] > result["exact_match"]["en"]
    assert all(0 < v < 100 for v in result["f1"].values() if v)
    assert result["avg_metric"] == pytest.approx((result["avg_exact_match"] + result["avg_f1"]) / 2)


def test_non_utf8_file_is_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, label_dir = build_submission(tmp_path, ["pawsx"])
    path = pred_dir / "pawsx/test-es.tsv"
    path.write_bytes(b"1\n\xff\n1\n1\n")
    assert main(["--predictions", str(pred_dir), "--labels", str(label_dir)]) == 1
    assert f"bad file: {path}:2: not UTF-8" in capsys.readouterr().err  # names the line too


def test_crlf_and_trailing_blank_lines_read_like_evaluate_py(tmp_path: Path) -> None:
    pred_dir, label_dir = build_submission(tmp_path, ["udpos"])
    lang = XTREME_TASK2LANGS["udpos"][1]
    # Windows line endings and one trailing blank line do not change the sentences.
    (pred_dir / f"udpos/test-{lang}.tsv").write_bytes(
        FILES["udpos"][1].replace("\n", "\r\n").encode() + b"\r\n"
    )
    scores = score_submission(pred_dir, label_dir)
    assert not scores.problems
    assert scores.tasks["udpos"]["f1"][lang] == pytest.approx(400 / 7)
