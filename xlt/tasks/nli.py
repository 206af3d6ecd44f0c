"""Natural-language inference: MNLI, SNLI, XNLI and ANLI, their original file formats and hub ids.

All four share one label order, that of the hub's ``glue``/``xnli``/``snli``/``anli`` ClassLabels:
entailment, neutral, contradiction.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from xlt.tasks.rawio import csv_records, delimited_rows, jsonl_records, require, text_lines, tsv_records
from xlt.tasks.registry import register_format, register_hub_mapper, register_task
from xlt.tasks.spec import DataError, Example, HubFile, RawFile, TaskSpec, Xtreme

NLI_LABELS = ("entailment", "neutral", "contradiction")
# XNLI-MT writes "contradictory"; ANLI abbreviates to e/n/c.
NLI_ALIASES = {"contradictory": "contradiction", "e": "entailment", "n": "neutral", "c": "contradiction"}
# MultiNLI/SNLI mark pairs without annotator consensus with "-"; GLUE and the hub drop them (label -1).
NO_CONSENSUS = "-"

XNLI_LANGS = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")


def _pair(text_a: str, text_b: str, label: str, where: str) -> Example:
    if not text_a or not text_b:
        raise DataError(f"{where}: empty premise or hypothesis")
    if label == NO_CONSENSUS:
        return {"_drop": True}
    canonical = NLI_ALIASES.get(label, label)
    if canonical not in NLI_LABELS:
        raise DataError(
            f"{where}: unknown label {label!r} (expected one of {list(NLI_LABELS)} or {sorted(NLI_ALIASES)})"
        )
    return {"text_a": text_a, "text_b": text_b, "label": NLI_LABELS.index(canonical)}


def _with_genre(ex: Example, row: Mapping[str, Any]) -> Example:
    """XNLI rows carry their genre: kept, so that a selection subset can be stratified by it."""
    if row.get("genre") and not ex.get("_drop"):
        ex["genre"] = str(row["genre"]).strip()
    return ex


def _field(row: Mapping[str, Any], name: str, where: str) -> str:
    return str(require(row, name, where)).strip()


def _sentence_pair_row(row: Mapping[str, Any], where: str) -> Example:
    """A MultiNLI/SNLI/XNLI row: ``sentence1``, ``sentence2``, ``gold_label``, its genre if any."""
    premise, hypothesis = _field(row, "sentence1", where), _field(row, "sentence2", where)
    return _with_genre(_pair(premise, hypothesis, _field(row, "gold_label", where), where), row)


@register_format("multinli_jsonl")
def read_multinli_jsonl(path: Path, lang: str) -> Iterator[Example]:
    """MultiNLI 1.0 / SNLI 1.0 jsonl: ``sentence1``, ``sentence2``, ``gold_label``."""
    for where, row in jsonl_records(path):
        yield _sentence_pair_row(row, where)


@register_format("glue_nli_tsv")
def read_glue_nli_tsv(path: Path, lang: str) -> Iterator[Example]:
    """GLUE MNLI/SNLI tsv (header with ``sentence1``, ``sentence2``, ``gold_label``)."""
    for where, row in tsv_records(path, ("sentence1", "sentence2", "gold_label")):
        yield _sentence_pair_row(row, where)


@register_format("xnli_mt_tsv")
def read_xnli_mt_tsv(path: Path, lang: str) -> Iterator[Example]:
    """XNLI-MT 1.0 ``multinli.train.{lang}.tsv`` (header ``premise hypo label``): XTREME's MNLI source."""
    for where, row in tsv_records(path, ("premise", "hypo", "label")):
        yield _pair(
            _field(row, "premise", where), _field(row, "hypo", where), _field(row, "label", where), where
        )


@register_format("xnli_official_tsv")
def read_xnli_official_tsv(path: Path, lang: str) -> Iterator[Example]:
    """XNLI 1.0 ``xnli.{dev,test}.tsv``: all languages in one file, selected by the ``language`` column."""
    for where, row in tsv_records(path, ("language", "sentence1", "sentence2", "gold_label")):
        if _field(row, "language", where) != lang:
            continue
        yield _sentence_pair_row(row, where)


@register_format("xnli_genre_tsv")
def read_xnli_genre_tsv(path: Path, lang: str) -> Iterator[Example]:
    """Per-language XNLI columns ``genre label sentence1_{lang} sentence2_{lang}`` (myXNLI layout)."""
    for where, row in tsv_records(path, ("label", f"sentence1_{lang}", f"sentence2_{lang}")):
        yield _with_genre(
            _pair(
                _field(row, f"sentence1_{lang}", where),
                _field(row, f"sentence2_{lang}", where),
                _field(row, "label", where),
                where,
            ),
            row,
        )


@register_format("nli_tsv3")
def read_nli_tsv3(path: Path, lang: str) -> Iterator[Example]:
    """Header-less ``premise<TAB>hypothesis<TAB>label`` (XTREME's preprocessed dev files, XGLUE)."""
    for where, row in delimited_rows(path, "\t", csv.QUOTE_NONE):
        if len(row) != 3:
            hint = " (labels stripped, as in XTREME's test files?)" if len(row) == 2 else ""
            raise DataError(
                f"{where}: expected 3 tab-separated fields (premise, hypothesis, label), got {len(row)}{hint}"
            )
        yield _pair(row[0].strip(), row[1].strip(), row[2].strip(), where)


@register_format("esnli_lines")
def read_esnli_lines(path: Path, lang: str) -> Iterator[Example]:
    """Line-aligned ``s1.{split}``/``s2.{split}``/``labels.{split}`` (e-SNLI / InferSent layout); ``path`` is s1."""
    split = path.name.split(".", 1)[1]
    s2_path, label_path = path.with_name(f"s2.{split}"), path.with_name(f"labels.{split}")
    for sibling in (s2_path, label_path):
        if not sibling.is_file():
            raise DataError(f"{sibling}: missing (line-aligned with {path})")
    s1, s2, labels = text_lines(path), text_lines(s2_path), text_lines(label_path)
    for lines, file in ((s1, path), (s2, s2_path), (labels, label_path)):
        if not lines and (len(s1) or len(s2) or len(labels)):  # the empty one, not s1, is the problem
            raise DataError(f"{file}: empty file (line-aligned with {path}, which has {len(s1)} lines)")
    if not len(s1) == len(s2) == len(labels):
        raise DataError(
            f"{path}: {len(s1)} premises, {len(s2)} hypotheses, {len(labels)} labels (expected equal counts)"
        )
    for lineno, (a, b, label) in enumerate(zip(s1, s2, labels, strict=True), 1):
        yield _pair(a.strip(), b.strip(), label.strip(), f"{path}:{lineno}")


@register_format("anli_jsonl")
def read_anli_jsonl(path: Path, lang: str) -> Iterator[Example]:
    """ANLI v1.0 ``R{1,2,3}/{train,dev,test}.jsonl``: ``context``, ``hypothesis``, ``label`` (e/n/c)."""
    for where, row in jsonl_records(path):
        yield _pair(
            _field(row, "context", where),
            _field(row, "hypothesis", where),
            _field(row, "label", where),
            where,
        )


@register_format("anli_analysis_csv")
def read_anli_analysis_csv(path: Path, lang: str) -> Iterator[Example]:
    """ANLI's annotated dev CSVs (``context``, ``statement`` = hypothesis, ``gold_label`` e/n/c)."""
    for where, row in csv_records(path, ("context", "statement", "gold_label")):
        yield _pair(
            _field(row, "context", where),
            _field(row, "statement", where),
            _field(row, "gold_label", where),
            where,
        )


@register_hub_mapper("nli_hf")
def map_hub_nli(row: Mapping[str, Any], lang: str) -> Example | None:
    """``premise``/``hypothesis``/``label`` rows (glue, snli, xnli, anli); label -1 means no consensus."""
    label = int(row["label"])
    if label < 0:
        return None
    # Stripped as the raw-file readers strip (texts may keep edge spaces on the hub). Hub SNLI is the
    # untokenized snli_1.0 text; the local SNLI files are e-SNLI's tokenized copy (docs/hub-data.md).
    return {"text_a": str(row["premise"]).strip(), "text_b": str(row["hypothesis"]).strip(), "label": label}


def _nli_spec(**kwargs: Any) -> TaskSpec:
    return TaskSpec(
        head="classification", metrics=("acc",), label_names=NLI_LABELS, label_aliases=NLI_ALIASES, **kwargs
    )


MNLI = register_task(
    _nli_spec(
        name="mnli",
        train_sizes={
            "train": (392_702, "GLUE MNLI train (HF nyu-mll/glue)"),
        },
        description="MultiNLI (GLUE), English; dev = matched",
        languages=("en",),
        raw={
            "train": (
                RawFile("XNLI-MT-1.0/multinli/multinli.train.en.tsv", "xnli_mt_tsv"),
                RawFile("mnli/multinli_1.0/multinli_1.0_train.jsonl", "multinli_jsonl"),
                RawFile("multinli_1.0/multinli_1.0_train.jsonl", "multinli_jsonl"),
                RawFile(
                    "multinli_1.0/multinli_1.0_train.txt", "glue_nli_tsv"
                ),  # the zip's tab-separated copy
                RawFile("glue_data/MNLI/train.tsv", "glue_nli_tsv"),
                RawFile("MNLI/train.tsv", "glue_nli_tsv"),  # GLUE's MNLI.zip unpacked on its own
                RawFile("xnli/train-en.tsv", "nli_tsv3"),  # XTREME's download (XNLI-MT English)
            ),
            "dev": (
                RawFile("mnli/multinli_1.0/multinli_1.0_dev_matched.jsonl", "multinli_jsonl"),
                RawFile("multinli_1.0/multinli_1.0_dev_matched.jsonl", "multinli_jsonl"),
                RawFile("multinli_1.0/multinli_1.0_dev_matched.txt", "glue_nli_tsv"),
                RawFile("glue_data/MNLI/dev_matched.tsv", "glue_nli_tsv"),
                RawFile("MNLI/dev_matched.tsv", "glue_nli_tsv"),
            ),
        },
        hub={
            "train": HubFile("nyu-mll/glue", "mnli", "train", "nli_hf"),
            "dev": HubFile("nyu-mll/glue", "mnli", "validation_matched", "nli_hf"),
        },
        max_seq_length=256,  # jiant's simple-API length (X-STILTs intermediate tasks)
        roles=("intermediate", "train_source"),
        citation="Williams et al. 2018",
    )
)

SNLI = register_task(
    _nli_spec(
        name="snli",
        train_sizes={
            "train": (550_152, "SNLI train rows (HF stanfordnlp/snli), incl. the few without a gold label"),
        },
        description="SNLI, English; rows without a consensus label are dropped (the task's own definition)",
        languages=("en",),
        raw={
            split: (
                RawFile(f"snli/snli_1.0/snli_1.0_{split}.jsonl", "multinli_jsonl"),
                RawFile(f"snli_1.0/snli_1.0_{split}.jsonl", "multinli_jsonl"),
                RawFile(f"snli_1.0/snli_1.0_{split}.txt", "glue_nli_tsv"),  # the zip's tab-separated copy
                RawFile(f"snli/esnli_tokenized/s1.{split}", "esnli_lines"),
            )
            for split in ("train", "dev", "test")
        },
        hub={
            "train": HubFile("stanfordnlp/snli", None, "train", "nli_hf"),
            "dev": HubFile("stanfordnlp/snli", None, "validation", "nli_hf"),
            "test": HubFile("stanfordnlp/snli", None, "test", "nli_hf"),
        },
        roles=("train_source",),
        citation="Bowman et al. 2015",
    )
)

ANLI_ROUNDS = ("r1", "r2", "r3")


def _anli_raw(split: str, rnd: str) -> tuple[RawFile, ...]:
    files = [
        RawFile(f"anli/anli_v1.0/{rnd.upper()}/{split}.jsonl", "anli_jsonl"),
        RawFile(f"anli_v1.0/{rnd.upper()}/{split}.jsonl", "anli_jsonl"),
    ]
    if split == "dev":
        files.append(RawFile(f"anli/ANLI_analysis_{rnd}_dev.csv", "anli_analysis_csv"))
    return tuple(files)


ANLI = register_task(
    _nli_spec(
        name="anli_rounds",
        train_sizes={
            "train_r1": (16_946, "ANLI R1 train (HF facebook/anli)"),
            "train_r2": (45_460, "ANLI R2 train (HF facebook/anli)"),
            "train_r3": (100_459, "ANLI R3 train (HF facebook/anli)"),
        },
        description="Adversarial NLI rounds 1-3 alone (ANLI+ is the mixture `anli`); split names per round "
        "(dev_r1) or unions (dev_r1+dev_r2)",
        languages=("en",),
        raw={
            f"{split}_{rnd}": _anli_raw(split, rnd)
            for split in ("train", "dev", "test")
            for rnd in ANLI_ROUNDS
        },
        hub={
            f"{split}_{rnd}": HubFile("facebook/anli", None, f"{split}_{rnd}", "nli_hf")
            for split in ("train", "dev", "test")
            for rnd in ANLI_ROUNDS
        },
        dev_split="dev_r1+dev_r2+dev_r3",
        max_seq_length=256,
        roles=("intermediate",),
        citation="Nie et al. 2020",
    )
)

XNLI = register_task(
    _nli_spec(
        name="xnli",
        dev_in_other_languages=True,
        description="XNLI: trained on English MNLI, selected on English XNLI dev, tested on 15 languages",
        languages=XNLI_LANGS,
        raw={
            "dev": (
                RawFile("XNLI-1.0/xnli.dev.tsv", "xnli_official_tsv"),
                RawFile("xnli/XNLI-1.0/xnli.dev.tsv", "xnli_official_tsv"),
                RawFile("xnli/{lang}/{lang}.genre.dev.tsv", "xnli_genre_tsv"),
                RawFile("xnli/dev-{lang}.tsv", "nli_tsv3"),  # XTREME's download (premise, hypothesis, label)
            ),
            "test": (
                RawFile("XNLI-1.0/xnli.test.tsv", "xnli_official_tsv"),
                RawFile("xnli/XNLI-1.0/xnli.test.tsv", "xnli_official_tsv"),
                RawFile("xnli/{lang}/{lang}.genre.test.tsv", "xnli_genre_tsv"),
                RawFile("xnli/{lang}/xglue_{lang}_test.tsv", "nli_tsv3"),
                # XTREME's download strips the test labels: found, then refused in one line saying so.
                RawFile("xnli/test-{lang}.tsv", "nli_tsv3"),
            ),
        },
        hub={
            "dev": HubFile("facebook/xnli", "{lang}", "validation", "nli_hf"),
            "test": HubFile("facebook/xnli", "{lang}", "test", "nli_hf"),
        },
        train_task="mnli",
        max_seq_length=256,
        roles=("target",),
        citation="Conneau et al. 2018",
        xtreme=Xtreme("classification", "accuracy"),
    )
)
