"""Bad input, tried as a tester would: every case must end in one line that names the file and line
(or the option) and what was expected, with exit status 2 from ``python -m xlt.train``, and leave
nothing behind that a later run or ``xlt.results`` trusts (results, predictions, state).

Bad files are made in ``tmp_path`` from a few genuine lines of the real data (``../shared/data``),
laid out as each reader expects, then corrupted. Most cases call the readers, ``xlt.orchestration.run.run`` or
``xlt.score.main`` in-process; a few go through a real ``python -m xlt.train`` subprocess to check
stderr and the exit status end to end.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from xlt import PROJECT_ROOT
from xlt.schema import ConfigError
from xlt.score import main as score_main
from xlt.tasks import DataError, get_task
from xlt.tasks.loading import load_split

TRUSTED = ("results.jsonl", "state.json", "predictions")  # what xlt.results and a relaunch read


def first_lines(path: Path, n: int) -> str:
    """The first ``n`` lines of a real file, line ends kept."""
    with open(path, encoding="utf-8", newline="") as fh:
        return "".join(line for _, line in zip(range(n), fh, strict=False))


def first_csv_records(path: Path, n: int) -> str:
    """The header and first ``n - 1`` records of a real CSV file (records may span lines)."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = [row for _, row in zip(range(n), csv.reader(fh), strict=False)]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def put(root: Path, rel: str, content: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def replace_line(text: str, number: int, edit: Callable[[str], str]) -> str:
    """``text`` with line ``number`` (1-based, without its line end) replaced by ``edit(line)``."""
    lines = text.split("\n")
    lines[number - 1] = edit(lines[number - 1])
    return "\n".join(lines)


def tab_in_first_field(line: str) -> str:
    """A tab inside the first text field: the row gains a field (a premise "Well" + the rest)."""
    fields = line.split("\t")
    i = next(i for i, f in enumerate(fields) if " " in f)
    fields[i] = fields[i].replace(" ", "\t", 1)
    return "\t".join(fields)


def drop_last_field(line: str) -> str:
    return line.rsplit("\t", 1)[0]


# -- reader cases: (task, split, lang) read from a tmp data dir holding one corrupted real file -----


@dataclass(frozen=True)
class Bad:
    id: str
    task: str
    split: str
    lang: str
    rel: str  # where the file goes under the tmp data dir
    make: Callable[[Path], str | bytes]  # real data dir -> corrupted content
    expect: str  # regex the one-line message must match after the file name
    line: int | None = None  # the line the message must name


def _xnli_en(data: Path) -> str:
    return first_lines(data / "xnli/en/en.genre.test.tsv", 6)


def _xnli_de(data: Path) -> str:
    return first_lines(data / "xnli/de/xglue_de_test.tsv", 5)


def _pawsx(data: Path) -> str:
    return first_lines(data / "pawsx/de/test_2k.tsv", 5)


def _conllu(data: Path) -> str:
    text = first_lines(data / "ud_pos/UD_English-EWT/en_ewt-ud-test.conllu", 40)
    return text[: text.rindex("\n\n") + 2]  # whole sentences only


def _panx(data: Path) -> str:
    return (data / "panx/hf_dummy/en/test").read_text(encoding="utf-8")


def _xquad(data: Path) -> str:
    return (data / "xquad/xquad.en.json").read_text(encoding="utf-8")


def _xquad_edit(edit: Callable[[dict], None]) -> Callable[[Path], str]:
    def make(data: Path) -> str:
        content = json.loads(_xquad(data))
        content["data"] = content["data"][:1]
        edit(content)
        return json.dumps(content, ensure_ascii=False, indent=1)

    return make


def _set_answer_start(content: dict) -> None:
    content["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 3


def _udpos_tsv(data: Path) -> str:
    # XTREME's word<TAB>UPOS layout, written from the first real EWT sentence.
    rows = [ln.split("\t") for ln in _conllu(data).split("\n") if ln and not ln.startswith("#")]
    return "".join(f"{cols[1]}\t{cols[3]}\n" for cols in rows[:8] if "-" not in cols[0]) + "\n"


def _tatoeba(data: Path, side: str) -> str:
    return first_lines(data / f"tatoeba/tatoeba.deu-eng.{side}", 6)


BUCC = "bucc2018/tfds_dummy/fr-en/fr-en.sample"
UTF16 = "\ufeff".encode("utf-16-le")  # what a spreadsheet's "Unicode text" export starts with

READER_CASES = [
    # NLI, XNLI per-language columns (header-keyed TSV)
    Bad("xnli-extra-field", "xnli", "test", "en", "xnli/en/en.genre.test.tsv",
        lambda d: replace_line(_xnli_en(d), 3, tab_in_first_field), r"5 tab-separated fields, expected 4", 3),
    Bad("xnli-missing-field", "xnli", "test", "en", "xnli/en/en.genre.test.tsv",
        lambda d: replace_line(_xnli_en(d), 4, drop_last_field), r"3 tab-separated fields, expected 4", 4),
    Bad("xnli-utf16", "xnli", "test", "en", "xnli/en/en.genre.test.tsv",
        lambda d: UTF16 + _xnli_en(d).encode("utf-16-le"), r"UTF-16/32 text .*save it as UTF-8"),
    Bad("xnli-utf16-no-bom", "xnli", "test", "en", "xnli/en/en.genre.test.tsv",
        lambda d: _xnli_en(d).encode("utf-16-le"), r"NUL byte", 1),
    Bad("xnli-latin1", "xnli", "test", "en", "xnli/en/en.genre.test.tsv",
        lambda d: replace_line(_xnli_en(d), 4, lambda s: s + " café").encode("latin-1", "replace"),
        r"not UTF-8 text", 4),
    Bad("xnli-gzip", "xnli", "test", "en", "xnli/en/en.genre.test.tsv",
        lambda d: __import__("gzip").compress(_xnli_en(d).encode()), r"not UTF-8 text", 1),
    Bad("xnli-empty-file", "xnli", "test", "en", "xnli/en/en.genre.test.tsv", lambda d: b"", r"empty file"),
    Bad("xnli-header-only", "xnli", "test", "en", "xnli/en/en.genre.test.tsv",
        lambda d: first_lines(d / "xnli/en/en.genre.test.tsv", 1), r"no records"),
    Bad("xnli-bad-label", "xnli", "test", "en", "xnli/en/en.genre.test.tsv",
        lambda d: replace_line(_xnli_en(d), 2, lambda s: s.replace("contradiction", "contradict", 1)),
        r"unknown label 'contradict'", 2),
    Bad("xnli-empty-premise", "xnli", "test", "en", "xnli/en/en.genre.test.tsv",
        lambda d: replace_line(_xnli_en(d), 5, lambda s: "\t".join(f if i != 2 else " " for i, f in
                                                                    enumerate(s.split("\t")))),
        r"empty premise or hypothesis", 5),  # fmt: skip
    Bad("xnli-header-renamed", "xnli", "test", "en", "xnli/en/en.genre.test.tsv",
        lambda d: _xnli_en(d).replace("sentence1_en", "premise", 1), r"header lacks \['sentence1_en'\]", 1),
    Bad("xnli-truncated-row", "xnli", "test", "en", "xnli/en/en.genre.test.tsv",
        lambda d: _xnli_en(d)[: _xnli_en(d).rindex("\t") - 5], r"3 tab-separated fields, expected 4", 6),
    # XNLI official all-languages file, XGLUE header-less triples
    Bad("xnli-official-extra-field", "xnli", "test", "en", "XNLI-1.0/xnli.test.tsv",
        lambda d: replace_line(first_lines(d / "xnli/hf_dummy/XNLI-1.0/xnli.test.tsv", 16), 2,
                               lambda s: s + "\tstray"), r"fields, expected", 2),  # fmt: skip
    Bad("xglue-extra-field", "xnli", "test", "de", "xnli/de/xglue_de_test.tsv",
        lambda d: replace_line(_xnli_de(d), 2, tab_in_first_field), r"expected 3 tab-separated fields", 2),
    Bad("xglue-labels-stripped", "xnli", "test", "de", "xnli/de/xglue_de_test.tsv",
        lambda d: replace_line(_xnli_de(d), 1, drop_last_field), r"got 2 \(labels stripped", 1),
    Bad("xglue-bad-label", "xnli", "test", "de", "xnli/de/xglue_de_test.tsv",
        lambda d: replace_line(_xnli_de(d), 3, lambda s: s.rsplit("\t", 1)[0] + "\tmaybe"),
        r"unknown label 'maybe'", 3),
    # MNLI: XNLI-MT, GLUE TSV, MultiNLI jsonl
    Bad("mnli-xnlimt-extra-field", "mnli", "train", "en", "XNLI-MT-1.0/multinli/multinli.train.en.tsv",
        lambda d: replace_line(first_lines(d / "xnli/hf_dummy/XNLI-MT-1.0/multinli/multinli.train.en.tsv", 6), 3,
                               tab_in_first_field), r"4 tab-separated fields, expected 3", 3),  # fmt: skip
    Bad("mnli-glue-extra-field", "mnli", "dev", "en", "glue_data/MNLI/dev_matched.tsv",
        lambda d: replace_line(first_lines(d / "mnli/hf_dummy/glue_MNLI/dev_matched.tsv", 4), 2,
                               lambda s: s.replace("\t", "\t\t", 1)), r"17 tab-separated fields, expected 16", 2),
    Bad("mnli-jsonl-truncated", "mnli", "dev", "en", "mnli/multinli_1.0/multinli_1.0_dev_matched.jsonl",
        lambda d: first_lines(d / "mnli/hf_dummy/multinli_1.0/multinli_1.0_dev_matched.jsonl", 3)[:-40],
        r"not a JSON object", 3),
    Bad("mnli-jsonl-missing-label", "mnli", "dev", "en", "mnli/multinli_1.0/multinli_1.0_dev_matched.jsonl",
        lambda d: first_lines(d / "mnli/hf_dummy/multinli_1.0/multinli_1.0_dev_matched.jsonl", 2).replace(
            '"gold_label"', '"gold"'), r"missing field 'gold_label'", 1),  # fmt: skip
    Bad("mnli-jsonl-array", "mnli", "dev", "en", "mnli/multinli_1.0/multinli_1.0_dev_matched.jsonl",
        lambda d: '["a", "b"]\n', r"not a JSON object", 1),
    # SNLI line-aligned files, ANLI CSV, QQP, PAWS-X
    Bad("snli-unaligned", "snli", "dev", "en", "snli/esnli_tokenized/s1.dev",
        lambda d: first_lines(d / "snli/esnli_tokenized/s1.dev", 9), r"9 premises, 10 hypotheses, 10 labels"),
    Bad("anli-csv-extra-field", "anli_rounds", "dev_r1", "en", "anli/ANLI_analysis_r1_dev.csv",
        lambda d: replace_line(first_csv_records(d / "anli/ANLI_analysis_r1_dev.csv", 4), 3, lambda s: s + ",x"),
        r"comma-separated fields, expected", 3),
    Bad("qqp-missing-field", "qqp", "train", "en", "glue_data/QQP/train.tsv",
        lambda d: replace_line(first_lines(d / "qqp/hf_dummy/QQP/train.tsv", 4), 2, drop_last_field),
        r"5 tab-separated fields, expected 6", 2),
    Bad("pawsx-extra-field", "pawsx", "test", "de", "x-final/de/test_2k.tsv",
        lambda d: replace_line(_pawsx(d), 3, tab_in_first_field), r"5 tab-separated fields, expected 4", 3),
    Bad("pawsx-bad-label", "pawsx", "test", "de", "x-final/de/test_2k.tsv",
        lambda d: replace_line(_pawsx(d), 2, lambda s: s[:-1] + "2"), r"label '2' \(expected 0 or 1\)", 2),
    Bad("pawsx-utf16", "pawsx", "test", "de", "x-final/de/test_2k.tsv",
        lambda d: UTF16 + _pawsx(d).encode("utf-16-le"), r"UTF-16"),
    # multiple choice
    Bad("hellaswag-text6-truncated", "hellaswag", "dev", "en", "hellaswag/hellaswag_val_full.txt",
        lambda d: first_lines(d / "hellaswag/hellaswag_val_full.txt", 11), r"11 lines, not a multiple of 6"),
    Bad("hellaswag-text6-bad-label", "hellaswag", "dev", "en", "hellaswag/hellaswag_val_full.txt",
        lambda d: replace_line(first_lines(d / "hellaswag/hellaswag_val_full.txt", 12), 8, lambda s: "4"),
        r"label 4 out of range", 7),
    Bad("hellaswag-jsonl-truncated", "hellaswag", "train", "en", "hellaswag/hellaswag_train.jsonl",
        lambda d: (d / "hellaswag/hf_dummy/hellaswag_train.jsonl").read_text()[:-30], r"not a JSON object", 2),
    Bad("cosmosqa-extra-field", "cosmosqa", "dev", "en", "cosmosqa/valid.csv",
        lambda d: replace_line(first_csv_records(d / "cosmosqa/valid.csv", 4), 2, lambda s: s + ",7"),
        r"9 comma-separated fields, expected 8", 2),
    Bad("cosmosqa-bad-label", "cosmosqa", "dev", "en", "cosmosqa/valid.csv",
        lambda d: replace_line(first_csv_records(d / "cosmosqa/valid.csv", 4), 3, lambda s: s[:-1] + "7"),
        r"label 7 out of range", 3),
    Bad("csqa-bad-answer-key", "csqa", "dev", "en", "commonsenseqa/dev_rand_split.jsonl",
        lambda d: replace_line(first_lines(d / "commonsenseqa/dev_rand_split.jsonl", 3), 2,
                               lambda s: re.sub(r'"answerKey": "[A-E]"', '"answerKey": "F"', s)),
        r"answerKey 'F' out of range", 2),  # fmt: skip
    # span QA (SQuAD-format JSON)
    Bad("xquad-truncated-json", "xquad", "test", "en", "xquad/xquad.en.json",
        lambda d: _xquad_edit(lambda c: None)(d)[:2000], r"not a JSON file"),
    Bad("xquad-answer-moved", "xquad", "test", "en", "xquad/xquad.en.json",
        _xquad_edit(_set_answer_start), r"does not match the context"),
    Bad("xquad-no-data-list", "xquad", "test", "en", "xquad/xquad.en.json",
        lambda d: json.dumps({"version": "1.1", "articles": []}), r"expected a SQuAD-format object"),
    Bad("xquad-utf16", "xquad", "test", "en", "xquad/xquad.en.json",
        lambda d: UTF16 + _xquad_edit(lambda c: None)(d).encode("utf-16-le"), r"UTF-16"),
    Bad("mlqa-empty-file", "mlqa", "dev", "de", "mlqa/dev/dev-context-de-question-de.json",
        lambda d: b"", r"empty file"),
    Bad("squad2-impossible-with-answer", "squad2", "dev", "en", "squad/dev-v2.0.json",
        lambda d: (d / "squad_v2.0/hf_dummy/dev-v2.0.json").read_text().replace(
            '"is_impossible": false', '"is_impossible": true', 1), r"is_impossible is true but"),  # fmt: skip
    # tagging
    Bad("conllu-nine-columns", "udpos", "test", "en", "ud_pos/UD_English-EWT/en_ewt-ud-test.conllu",
        lambda d: replace_line(_conllu(d), 5, drop_last_field), r"expected 10 tab-separated CoNLL-U columns, got 9", 5),
    Bad("conllu-bad-upos", "udpos", "test", "en", "ud_pos/UD_English-EWT/en_ewt-ud-test.conllu",
        lambda d: _conllu(d).replace("\tPRON\t", "\tPRONOUN\t", 1), r"unknown tag 'PRONOUN'"),
    Bad("udpos-tsv-extra-field", "udpos", "test", "en", "udpos/test-en.tsv",
        lambda d: replace_line(_udpos_tsv(d), 2, lambda s: s + "\tNOUN"), r"got 3 tab-separated field", 2),
    Bad("panx-extra-field", "panx", "test", "en", "panx_dataset/en/test",
        lambda d: replace_line(_panx(d), 2, lambda s: s + "\tO"), r"got 3 tab-separated field", 2),
    Bad("panx-missing-tag", "panx", "test", "en", "panx_dataset/en/test",
        lambda d: replace_line(_panx(d), 3, lambda s: s.split("\t")[0]), r"got 1 tab-separated field", 3),
    Bad("panx-empty-tag", "panx", "test", "en", "panx_dataset/en/test",
        lambda d: replace_line(_panx(d), 1, lambda s: s.split("\t")[0] + "\t "), r"got an empty tag", 1),
    Bad("panx-bad-tag", "panx", "test", "en", "panx_dataset/en/test",
        lambda d: replace_line(_panx(d), 1, lambda s: s.split("\t")[0] + "\tB-MISC"), r"unknown tag 'B-MISC'"),
    Bad("ccg-leaf-lacks-fields", "ccg", "train", "en", "ccgbank/data/AUTO/00/wsj_0001.auto",
        lambda d: (d / "ccg/fixture/ccgbank.txt").read_text().replace("(<L N NNP NNP Vinken N>)", "(<L N>)", 1),
        r"1 of \d+ leaves lack fields", 2),
    # retrieval
    Bad("tatoeba-unaligned", "tatoeba", "test", "de", "tatoeba/tatoeba.deu-eng.deu",
        lambda d: _tatoeba(d, "deu") + "Ein Satz zu viel.\n", r"7 lines but tatoeba.deu-eng.eng has 6"),
    Bad("tatoeba-utf16", "tatoeba", "test", "de", "tatoeba/tatoeba.deu-eng.deu",
        lambda d: UTF16 + _tatoeba(d, "deu").encode("utf-16-le"), r"UTF-16"),
    Bad("bucc-tab-in-sentence", "bucc2018", "dev", "fr", "bucc2018/fr-en.dev.fr",
        lambda d: (d / f"{BUCC}.fr").read_text().replace(" ", "\t", 1), r"got 3 tab-separated field", 1),
    Bad("bucc-gold-unknown-id", "bucc2018", "dev", "fr", "bucc2018/fr-en.dev.gold",
        lambda d: (d / f"{BUCC}.gold").read_text().replace("en-000014960", "en-000000001"),
        r"id 'en-000000001' is not in", 1),
    Bad("bucc-gold-three-fields", "bucc2018", "dev", "fr", "bucc2018/fr-en.dev.gold",
        lambda d: (d / f"{BUCC}.gold").read_text().rstrip("\n") + "\t0.93\n", r"got 3 tab-separated field", 1),
]  # fmt: skip

# The untouched siblings each case's file needs to be read (other files of the same layout).
SIBLINGS = {
    "snli-unaligned": [("snli/esnli_tokenized/s2.dev", "snli/esnli_tokenized/s2.dev", 10),
                       ("snli/esnli_tokenized/labels.dev", "snli/esnli_tokenized/labels.dev", 10)],
    "tatoeba-unaligned": [("tatoeba/tatoeba.deu-eng.eng", "tatoeba/tatoeba.deu-eng.eng", 6)],
    "tatoeba-utf16": [("tatoeba/tatoeba.deu-eng.eng", "tatoeba/tatoeba.deu-eng.eng", 6)],
    "bucc-tab-in-sentence": [("bucc2018/fr-en.dev.en", f"{BUCC}.en", 5), ("bucc2018/fr-en.dev.gold", f"{BUCC}.gold", 5)],
    "bucc-gold-unknown-id": [("bucc2018/fr-en.dev.fr", f"{BUCC}.fr", 5), ("bucc2018/fr-en.dev.en", f"{BUCC}.en", 5)],
    "bucc-gold-three-fields": [("bucc2018/fr-en.dev.fr", f"{BUCC}.fr", 5), ("bucc2018/fr-en.dev.en", f"{BUCC}.en", 5)],
}  # fmt: skip


@pytest.mark.parametrize("case", READER_CASES, ids=[c.id for c in READER_CASES])
def test_bad_file_is_one_line_naming_file_and_line(case: Bad, data_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    bad = put(root, case.rel, case.make(data_dir))
    for rel, source, n in SIBLINGS.get(case.id, []):
        put(root, rel, first_lines(data_dir / source, n))
    with pytest.raises(DataError) as err:
        load_split(get_task(case.task), case.split, case.lang, "local", root)
    message = str(err.value)
    assert "\n" not in message, message
    named = re.escape(f"{bad}:{case.line}") + "[: ]" if case.line is not None else re.escape(str(bad))
    assert re.search(named, message), message
    assert re.search(case.expect, message), message


# -- what must still read right ------------------------------------------------------------------


def test_bom_is_stripped_not_read_into_the_first_field(data_dir: Path, tmp_path: Path) -> None:
    # Header-less XGLUE triples: a BOM would become part of the first premise; a header-keyed
    # file would lose its first column's name.
    cases = [("xnli", "test", "de", "xnli/de/xglue_de_test.tsv", _xnli_de(data_dir)),
             ("xnli", "test", "en", "xnli/en/en.genre.test.tsv", _xnli_en(data_dir)),
             ("panx", "test", "en", "panx_dataset/en/test", _panx(data_dir)),
             ("xquad", "test", "en", "xquad/xquad.en.json", _xquad(data_dir))]  # fmt: skip
    for task, split, lang, rel, text in cases:
        clean = load_split(get_task(task), split, lang, "local", put(tmp_path / "clean", rel, text).parents[
            len(Path(rel).parts) - 1])  # fmt: skip
        bom = load_split(get_task(task), split, lang, "local", put(tmp_path / "bom", rel, "\ufeff" + text).parents[
            len(Path(rel).parts) - 1])  # fmt: skip
        assert bom.examples == clean.examples, task
        assert not json.dumps(bom.examples[0], ensure_ascii=False).count("\ufeff")


def test_crlf_files_read_like_lf(data_dir: Path, tmp_path: Path) -> None:
    text = _xnli_en(data_dir).replace("\r\n", "\n")
    lf = load_split(get_task("xnli"), "test", "en", "local", put(tmp_path / "a", "xnli/en/en.genre.test.tsv",
                                                                text).parents[2])  # fmt: skip
    crlf = load_split(get_task("xnli"), "test", "en", "local", put(
        tmp_path / "b", "xnli/en/en.genre.test.tsv", text.replace("\n", "\r\n")).parents[2])  # fmt: skip
    assert crlf.examples == lf.examples and len(lf.examples) == 5


def test_the_issue_row_a_tab_inside_a_premise_was_read_as_premise_well(
    data_dir: Path, tmp_path: Path
) -> None:
    # The row of the issue: "Well,<TAB>I wasn't even thinking ..." used to give premise "Well," and a
    # hypothesis made of the rest of the premise, dropping the real hypothesis.
    text = replace_line(_xnli_en(data_dir), 2, lambda s: s.replace("Well, ", "Well,\t", 1))
    bad = put(tmp_path / "data", "xnli/en/en.genre.test.tsv", text)
    with pytest.raises(DataError, match=re.escape(f"{bad}:2: 5 tab-separated fields, expected 4")):
        load_split(get_task("xnli"), "test", "en", "local", tmp_path / "data")


# -- settings: refused at validation, before any data or model is loaded, nothing written ---------

XNLI_RUN = ("model=tiny", "+target=xnli", "target.languages=[en,de]")
OPTION_CASES = [
    ("epochs-zero", ("target.epochs=0",), r"^target\.epochs=0\.0: expected > 0$"),
    ("epochs-negative", ("target.epochs=-1",), r"^target\.epochs=-1\.0: expected > 0$"),
    ("lr-negative", ("target.lr=-1e-5",), r"^target\.lr=-1e-05: expected > 0$"),
    ("lr-zero", ("target.lr=0",), r"^target\.lr=0\.0: expected > 0$"),
    ("lr-nan", ("target.lr=nan",), r"^target\.lr=nan: expected > 0$"),
    ("lr-inf", ("target.lr=inf",), r"^target\.lr=inf: expected > 0$"),
    ("batch-size-zero", ("target.batch_size=0",), r"^target\.batch_size=0: expected >= 1$"),
    ("eval-batch-size-zero", ("target.eval_batch_size=0",), r"^target\.eval_batch_size=0: expected >= 1$"),
    ("max-train-zero", ("target.max_train_examples=0",), r"^target\.max_train_examples=0: expected >= 1 or null$"),
    ("max-eval-negative", ("target.max_eval_examples=-5",), r"^target\.max_eval_examples=-5: expected >= 1"),
    ("seq-length-4", ("target.max_seq_length=4",), r"^target\.max_seq_length=4: below xnli's minimum of 16"),
    ("seq-length-past-positions", ("target.max_seq_length=600",),
     r"^target\.max_seq_length=600: above the 512 positions of model tiny"),
    ("intermediate-lr", ("+intermediate=mnli", "intermediate.lr=-1"), r"^intermediate\.lr=-1\.0: expected > 0$"),
    ("intermediate-epochs", ("+intermediate=mnli", "intermediate.epochs=0"), r"^intermediate\.epochs=0\.0"),
    ("member-seq-length", ("+intermediate=all9", "intermediate.members.squad.max_seq_length=128"),
     r"^intermediate\.members\.squad\.max_seq_length=128: below squad's minimum of 196"),
    ("member-max-train", ("+intermediate=anli", "+intermediate.members.snli.max_train_examples=0"),
     r"^intermediate\.members\.snli\.max_train_examples=0: expected >= 1 or null$"),
    ("devices-zero", ("scale.devices=0",), r"^scale\.devices=0: expected >= 1$"),
    ("per-device-batch-zero", ("scale.per_device_batch_size=0",), r"^scale\.per_device_batch_size=0"),
    ("warmup-ratio", ("optim.warmup_ratio=1.5",), r"^optim\.warmup_ratio=1\.5: expected 0 <= ratio < 1$"),
    ("retrieval-seq-length", ("probe.tasks=[tatoeba]", "retrieval.max_seq_length=1024"),
     r"^retrieval\.max_seq_length=1024: above the 512 positions"),
    ("probe-max-examples", ("probe.tasks=[tatoeba]", "probe.max_examples=0"), r"^probe\.max_examples=0"),
    ("data-dir-missing", ("data.dir=/nonexistent/xlt-data",),
     r"^data\.dir=/nonexistent/xlt-data: no such directory"),
    ("data-dir-is-a-file", ("data.dir=" + str(PROJECT_ROOT / "README.md"),), r"^data\.dir=.*README\.md: not a directory"),
    ("unknown-target-language", ("target.languages=[en,xx]",), r"^target\.languages: 'xx' is not a language of xnli"),
]  # fmt: skip


@pytest.mark.parametrize("overrides,expect", [c[1:] for c in OPTION_CASES], ids=[c[0] for c in OPTION_CASES])
def test_bad_option_refused_before_anything_is_written(
    compose_cfg, tmp_path: Path, overrides, expect
) -> None:
    from xlt.orchestration.run import run

    cfg = compose_cfg(*XNLI_RUN, *overrides)
    with pytest.raises(ConfigError) as err:
        run(cfg, tmp_path / "run")
    assert "\n" not in str(err.value)
    assert re.search(expect, str(err.value)), str(err.value)
    assert not (tmp_path / "run").exists()  # not even config.yaml


def test_qa_minimum_length_and_model_positions_on_every_model(compose_cfg) -> None:
    from xlt.config import validate

    with pytest.raises(ConfigError, match=r"target\.max_seq_length=195: below xquad's minimum of 196"):
        validate(compose_cfg("+target=xquad", "target.max_seq_length=195"))
    validate(compose_cfg("+target=xquad", "target.max_seq_length=196"))
    validate(
        compose_cfg("+target=xquad", "model=qwen2_5_7b", "target.max_seq_length=4096")
    )  # 32,768 positions
    with pytest.raises(ConfigError, match=r"above the 512 positions of model xlmr_xxl"):
        validate(compose_cfg("+target=xquad", "model=xlmr_xxl", "target.max_seq_length=513"))


def test_span_qa_minimum_matches_the_featuriser(compose_cfg) -> None:
    from xlt.data.features_qa import DOC_STRIDE, MAX_QUERY_LENGTH
    from xlt.modeling.encoder import load_tokenizer

    tokenizer = load_tokenizer(compose_cfg("model=tiny", "+target=xquad").model, Path(compose_cfg(
        "+target=xquad").data.cache_dir))  # fmt: skip
    special = tokenizer.num_special_tokens_to_add(pair=True)
    assert get_task("xquad").shortest_seq_length == MAX_QUERY_LENGTH + special + DOC_STRIDE


def test_missing_xlt_data_dir_is_an_error_not_a_hub_fallback(
    compose_cfg, tmp_path: Path, monkeypatch
) -> None:
    from xlt.orchestration.run import run

    monkeypatch.setenv("XLT_DATA_DIR", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match=r"^XLT_DATA_DIR=.*absent: no such directory"):
        run(compose_cfg(*XNLI_RUN), tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- data a run needs: refused before anything is written, or when read, nothing trusted left -----


def xnli_data(data: Path, root: Path, n: int = 17) -> Path:
    """A tmp data dir for `+target=xnli`: real MNLI (XNLI-MT) train lines, English XNLI dev and test
    lines, German XGLUE test lines."""
    put(root, "XNLI-MT-1.0/multinli/multinli.train.en.tsv",
        first_lines(data / "xnli/hf_dummy/XNLI-MT-1.0/multinli/multinli.train.en.tsv", 6))  # fmt: skip
    put(root, "xnli/en/en.genre.dev.tsv", first_lines(data / "xnli/en/en.genre.dev.tsv", n))
    put(root, "xnli/en/en.genre.test.tsv", first_lines(data / "xnli/en/en.genre.test.tsv", n))
    put(root, "xnli/de/xglue_de_test.tsv", first_lines(data / "xnli/de/xglue_de_test.tsv", n - 1))
    return root


def assert_nothing_trusted(run_dir: Path) -> None:
    left = [name for name in TRUSTED if (run_dir / name).exists()]
    assert not left, f"left behind in {run_dir}: {left}"


RUN_ARGS = ("model=tiny", "+target=xnli", "target.languages=[en,de]", "data.source=local", "debug=fdr",
            "scale.per_device_batch_size=4", "target.batch_size=4", "target.max_seq_length=64")  # fmt: skip


@pytest.mark.parametrize("missing", ["xnli/en/en.genre.test.tsv", "xnli/en/en.genre.dev.tsv",
                                     "XNLI-MT-1.0/multinli/multinli.train.en.tsv"])  # fmt: skip
def test_missing_english_file_is_an_error_before_anything_is_written(
    compose_cfg, data_dir: Path, tmp_path: Path, missing: str
) -> None:
    from xlt.orchestration.run import run

    root = xnli_data(data_dir, tmp_path / "data")
    (root / missing).unlink()
    with pytest.raises(DataError) as err:
        run(compose_cfg(*RUN_ARGS, f"data.dir={root}"), tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message and re.match(r"^(xnli|mnli)/(test|dev|train)/en: no file under ", message), (
        message
    )
    if missing.endswith("test.tsv"):
        assert message.endswith("(the English test: the gap is measured from it)")
    assert not (tmp_path / "run" / "config.yaml").exists()
    assert_nothing_trusted(tmp_path / "run")


def test_bad_english_test_row_in_a_run_leaves_no_results(compose_cfg, data_dir: Path, tmp_path: Path) -> None:
    from xlt.orchestration.run import run

    root = xnli_data(data_dir, tmp_path / "data")
    test = root / "xnli/en/en.genre.test.tsv"
    test.write_text(replace_line(test.read_text(), 3, tab_in_first_field), encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{test}:3: 5 tab-separated fields, expected 4")):
        run(compose_cfg(*RUN_ARGS, f"data.dir={root}"), tmp_path / "run")
    assert_nothing_trusted(tmp_path / "run")


@pytest.mark.slow  # trains (fdr) or loads the model in a subprocess: ~30-70 s on 2 busy cores
def test_missing_non_english_test_is_still_one_skipped_line(
    compose_cfg, data_dir: Path, tmp_path: Path
) -> None:
    from xlt.orchestration.run import run

    root = xnli_data(data_dir, tmp_path / "data")
    (root / "xnli/de/xglue_de_test.tsv").unlink()
    summary = run(compose_cfg(*RUN_ARGS, f"data.dir={root}"), tmp_path / "run")
    assert "test/xnli/en/acc" in summary and "test/xnli/de/acc" not in summary
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert len(state["skipped"]) == 1 and state["skipped"][0].startswith("xnli/test/de: no file under")


# -- xlt.score --------------------------------------------------------------------------------------


def score_dirs(tmp_path: Path, data_dir: Path) -> tuple[Path, Path, list[str]]:
    """A PAWS-X submission: the real labels of 40 German test pairs, and predictions that get 38 of
    them right (the same files stand in for the other six languages, so that the task is complete)."""
    rows = first_lines(data_dir / "pawsx/de/test_2k.tsv", 41).splitlines()[1:]
    labels = [row.split("\t")[-1] for row in rows]
    predictions = [
        ("1" if label == "0" else "0") if i in (3, 17) else label for i, label in enumerate(labels)
    ]
    pred, gold = tmp_path / "pred", tmp_path / "gold"
    for lang in ("de", "en", "es", "fr", "ja", "ko", "zh"):
        put(pred, f"pawsx/test-{lang}.tsv", "\n".join(predictions) + "\n")
        put(gold, f"pawsx/test-{lang}.tsv", "\n".join(labels) + "\n")
    return pred, gold, labels


def _score(pred: Path, gold: Path, capsys) -> tuple[int, dict, list[str]]:
    code = score_main(["--predictions", str(pred), "--labels", str(gold), "--tasks", "pawsx"])
    out = capsys.readouterr()
    return code, json.loads(out.out), [line for line in out.err.splitlines() if line]


def test_score_strips_a_bom_from_labels_and_predictions(data_dir: Path, tmp_path: Path, capsys) -> None:
    pred, gold, _ = score_dirs(tmp_path, data_dir)
    code, clean, _ = _score(pred, gold, capsys)
    assert code == 0 and clean["tasks"]["pawsx"]["accuracy"]["de"] == pytest.approx(95.0)
    for path in (gold / "pawsx/test-de.tsv", pred / "pawsx/test-de.tsv"):
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
        code, with_bom, problems = _score(pred, gold, capsys)
        assert code == 0 and not problems
        assert with_bom["tasks"]["pawsx"]["accuracy"]["de"] == clean["tasks"]["pawsx"]["accuracy"]["de"]


SCORE_CASES = [
    ("labels-utf16", "gold", lambda b: "\ufeff".encode("utf-16-le") + b.decode().encode("utf-16-le"), r"UTF-16", None),
    ("labels-extra-field", "gold", lambda b: b.replace(b"\n", b"\tx\n", 1), r"2 tab-separated fields, expected 1", 1),
    ("predictions-latin1", "pred", lambda b: b.replace(b"\n", b"\xe9\n", 3), r"not UTF-8 text", 1),
    ("predictions-nul", "pred", lambda b: b[:6] + b"\x00" + b[6:], r"NUL byte", 4),
    ("predictions-short", "pred", lambda b: b[: b.rindex(b"\n", 0, -1) + 1], r"39 lines, expected 40", None),
]  # fmt: skip


@pytest.mark.parametrize(
    "side,corrupt,expect,line", [c[1:] for c in SCORE_CASES], ids=[c[0] for c in SCORE_CASES]
)
def test_score_bad_file_is_one_line(
    data_dir: Path, tmp_path: Path, capsys, side, corrupt, expect, line
) -> None:
    pred, gold, _ = score_dirs(tmp_path, data_dir)
    path = (pred if side == "pred" else gold) / "pawsx/test-de.tsv"
    path.write_bytes(corrupt(path.read_bytes()))
    code, report, problems = _score(pred, gold, capsys)
    assert code == 1 and report["incomplete"] == {"pawsx": ["de"]}
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"bad file: {path}" + (f":{line}:" if line else "")), problems[0]
    assert re.search(expect, problems[0]), problems[0]


def test_score_bucc_pair_lines_count_fields(tmp_path: Path, capsys) -> None:
    pred, gold = tmp_path / "pred", tmp_path / "gold"
    put(gold, "bucc2018/test-fr.tsv", "fr-000000002\ten-000014960\n")
    put(pred, "bucc2018/test-fr.tsv", "fr-000000002\ten-000014960\t0.91\n")
    assert score_main(["--predictions", str(pred), "--labels", str(gold), "--tasks", "bucc2018"]) == 1
    err = capsys.readouterr().err
    assert f"bad file: {pred / 'bucc2018/test-fr.tsv'}:1: 3 tab-separated fields, expected 2" in err


# -- end to end: python -m xlt.train -------------------------------------------------------------


def _train(
    tmp_path: Path, *overrides: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "xlt.train", "logger=none", "trainer.enable_progress_bar=false",
           f"hydra.run.dir={run_dir}", *overrides]  # fmt: skip
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, cwd=PROJECT_ROOT, env=full_env, capture_output=True, text=True, timeout=600)


def _assert_one_line_exit_2(proc: subprocess.CompletedProcess[str], expect: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(expect, errors[0]), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "error" not in proc.stdout  # not through Hydra's logging to stdout


def test_cli_bad_option_stderr_exit_2(tmp_path: Path) -> None:
    proc = _train(tmp_path, "model=tiny", "+target=xnli", "target.max_seq_length=4")
    _assert_one_line_exit_2(proc, r"^error: target\.max_seq_length=4: below xnli's minimum of 16 tokens")
    assert not (tmp_path / "run" / "config.yaml").exists()
    assert_nothing_trusted(tmp_path / "run")


def test_cli_missing_data_dir_stderr_exit_2(tmp_path: Path) -> None:
    proc = _train(tmp_path, "model=tiny", "+target=xnli", env={"XLT_DATA_DIR": str(tmp_path / "absent")})
    _assert_one_line_exit_2(proc, r"^error: XLT_DATA_DIR=.*absent: no such directory")
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.slow  # trains (fdr) or loads the model in a subprocess: ~30-70 s on 2 busy cores
def test_cli_extra_field_in_english_test_stderr_exit_2(
    data_dir: Path, tmp_path: Path, cache_dir: Path
) -> None:
    root = xnli_data(data_dir, tmp_path / "data")
    test = root / "xnli/en/en.genre.test.tsv"
    test.write_text(replace_line(test.read_text(), 4, tab_in_first_field), encoding="utf-8")
    proc = _train(tmp_path, *RUN_ARGS, f"data.dir={root}", f"data.cache_dir={cache_dir}")
    _assert_one_line_exit_2(proc, re.escape(f"error: {test}:4: 5 tab-separated fields, expected 4"))
    assert_nothing_trusted(tmp_path / "run")


# -- files under the names their official downloads use ------------------------------------------


def _tydiqa_arabic(data: Path) -> str:
    # The official per-language dev file holds that language's questions of the multilingual file.
    content = json.loads((data / "tydiqa/hf_dummy/tydiqa-goldp-v1.1-dev.json").read_text(encoding="utf-8"))
    assert all(
        q["id"].startswith("arabic-") for a in content["data"] for p in a["paragraphs"] for q in p["qas"]
    )
    return json.dumps(content, ensure_ascii=False)


OFFICIAL_NAMES = [
    ("tydiqa", "test", "ar", "tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-arabic.json", _tydiqa_arabic),
    ("tydiqa", "test", "ar", "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-arabic.json", _tydiqa_arabic),
    ("mnli", "dev", "en", "MNLI/dev_matched.tsv",
     lambda d: first_lines(d / "mnli/hf_dummy/glue_MNLI/dev_matched.tsv", 4)),
    ("mnli", "dev", "en", "multinli_1.0/multinli_1.0_dev_matched.txt",
     lambda d: first_lines(d / "mnli/hf_dummy/glue_MNLI/dev_matched.tsv", 4)),
    ("mnli", "train", "en", "xnli/train-en.tsv", lambda d: "".join(
        "\t".join(line.split("\t")[:3]) + "\n" for line in _xnli_de(d).splitlines())),
    ("xnli", "dev", "de", "xnli/dev-de.tsv", lambda d: first_lines(d / "xnli/de/xglue_de_dev.tsv", 5)),
    ("tatoeba", "test", "de", "tatoeba/v1/tatoeba.deu-eng.deu", lambda d: _tatoeba(d, "deu")),
]  # fmt: skip


@pytest.mark.parametrize("task,split,lang,rel,make", OFFICIAL_NAMES, ids=[c[3] for c in OFFICIAL_NAMES])
def test_official_download_names_are_found(
    data_dir: Path, tmp_path: Path, task, split, lang, rel, make
) -> None:
    root = tmp_path / "data"
    path = put(root, rel, make(data_dir))
    if task == "tatoeba":
        put(root, rel.replace(".deu-eng.deu", ".deu-eng.eng"), _tatoeba(data_dir, "eng"))
    loaded = load_split(get_task(task), split, lang, "local", root)
    assert loaded.origin == str(path) and loaded.examples


def test_xtreme_test_file_without_labels_says_so(data_dir: Path, tmp_path: Path) -> None:
    # XTREME's download strips XNLI's test labels: the file is found and refused in one line.
    lines = [drop_last_field(line) for line in _xnli_de(data_dir).splitlines()]
    bad = put(tmp_path / "data", "xnli/test-de.tsv", "\n".join(lines) + "\n")
    with pytest.raises(
        DataError, match=re.escape(f"{bad}:1: expected 3 tab-separated fields") + ".*labels stripped"
    ):
        load_split(get_task("xnli"), "test", "de", "local", tmp_path / "data")
