"""Sentence-pair classification besides NLI: QQP (intermediate) and PAWS-X (target).

Both use the ``classification`` head and the classification featuriser (``text_a``, ``text_b``,
``label``), as the NLI tasks do.

PAWS-X trains on English only: its ``train`` split is always ``x-final/en/train.tsv`` (hub:
``paws-x``/``en``), never the machine-translated ``translated_train.tsv`` of the other languages, which
would make the transfer no longer zero-shot.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from xlt.tasks.rawio import tsv_records
from xlt.tasks.registry import register_format, register_hub_mapper, register_task
from xlt.tasks.spec import DataError, Example, HubFile, RawFile, TaskSpec, Xtreme

QQP_LABELS = ("not_duplicate", "duplicate")  # nyu-mll/glue qqp ClassLabel order; GLUE tsv writes 0/1
PAWSX_LABELS = ("0", "1")  # 1 = paraphrase; the hub's ClassLabel names
PAWSX_LANGS = ("de", "en", "es", "fr", "ja", "ko", "zh")


def _tsv(path: Path, required: tuple[str, ...]) -> Iterator[tuple[str, dict[str, str]]]:
    """Header-keyed rows of a tab-separated file whose text may hold bare quotes (GLUE, PAWS-X),
    each with exactly the header's number of fields."""
    return tsv_records(path, required)


def _binary(text_a: str, text_b: str, label: str, where: str) -> Example:
    if label not in ("0", "1"):
        raise DataError(f"{where}: label {label!r} (expected 0 or 1)")
    return {"text_a": text_a.strip(), "text_b": text_b.strip(), "label": int(label)}


@register_format("glue_qqp_tsv")
def read_glue_qqp_tsv(path: Path, lang: str) -> Iterator[Example]:
    """GLUE ``QQP/{train,dev}.tsv``: ``id qid1 qid2 question1 question2 is_duplicate``."""
    for where, row in _tsv(path, ("question1", "question2", "is_duplicate")):
        yield _binary(row["question1"], row["question2"], row["is_duplicate"].strip(), where)


@register_hub_mapper("qqp_hf")
def map_hub_qqp(row: Mapping[str, Any], lang: str) -> Example | None:
    if int(row["label"]) < 0:  # GLUE test: hidden labels
        return None
    return {"text_a": row["question1"], "text_b": row["question2"], "label": int(row["label"])}


@register_format("pawsx_tsv")
def read_pawsx_tsv(path: Path, lang: str) -> Iterator[Example]:
    """PAWS-X ``x-final/{lang}/{train,dev_2k,test_2k}.tsv``: header ``id sentence1 sentence2 label``.

    The header is a header: the first data row is kept (xtreme #70). Rows with an empty sentence are
    kept as XTREME keeps them, so every language scores its full 2,000 pairs.
    """
    for where, row in _tsv(path, ("sentence1", "sentence2", "label")):
        yield _binary(row["sentence1"], row["sentence2"], row["label"].strip(), where)


@register_hub_mapper("pawsx_hf")
def map_hub_pawsx(row: Mapping[str, Any], lang: str) -> Example | None:
    if int(row["label"]) < 0:  # the hub marks missing or wrong labels with -1
        return None
    return {"text_a": row["sentence1"], "text_b": row["sentence2"], "label": int(row["label"])}


QQP = register_task(
    TaskSpec(
        name="qqp",
        train_sizes={
            "train": (363_846, "GLUE QQP train (HF nyu-mll/glue)"),
        },
        description="Quora Question Pairs (GLUE): duplicate or not; test labels are hidden, so dev is the GLUE dev",
        head="classification",
        metrics=("acc", "f1"),  # jiant's AccAndF1EvaluationScheme; F1 of the duplicate class
        languages=("en",),
        label_names=QQP_LABELS,
        raw={
            split: (
                RawFile(f"glue_data/QQP/{split}.tsv", "glue_qqp_tsv"),
                RawFile(f"glue/QQP/{split}.tsv", "glue_qqp_tsv"),
                RawFile(f"QQP/{split}.tsv", "glue_qqp_tsv"),
            )
            for split in ("train", "dev")
        },
        hub={
            "train": HubFile("nyu-mll/glue", "qqp", "train", "qqp_hf"),
            "dev": HubFile("nyu-mll/glue", "qqp", "validation", "qqp_hf"),
        },
        max_seq_length=256,  # jiant's simple-API length (X-STILTs intermediate tasks)
        roles=("intermediate",),
        citation="Iyer et al. 2017; Wang et al. 2019 (GLUE)",
    )
)


def _pawsx_raw(file: str, lang: str = "{lang}") -> tuple[RawFile, ...]:
    return (
        RawFile(f"x-final/{lang}/{file}.tsv", "pawsx_tsv"),
        RawFile(f"pawsx/x-final/{lang}/{file}.tsv", "pawsx_tsv"),
        RawFile(f"pawsx/{lang}/{file}.tsv", "pawsx_tsv"),
    )


PAWSX = register_task(
    TaskSpec(
        name="pawsx",
        train_sizes={
            "train": (49_401, "PAWS-X en train (unverified: reference.md marks it [U])"),
        },
        dev_in_other_languages=True,
        description="PAWS-X: trained on English PAWS-X train, selected on English dev_2k, tested on 7 languages",
        head="classification",
        metrics=("acc",),
        languages=PAWSX_LANGS,
        label_names=PAWSX_LABELS,
        raw={
            "train": _pawsx_raw("train", lang="en"),  # English only, whatever the language asked for
            "dev": _pawsx_raw("dev_2k"),
            "test": _pawsx_raw("test_2k"),
        },
        hub={
            "train": HubFile("google-research-datasets/paws-x", "en", "train", "pawsx_hf"),
            "dev": HubFile("google-research-datasets/paws-x", "{lang}", "validation", "pawsx_hf"),
            "test": HubFile("google-research-datasets/paws-x", "{lang}", "test", "pawsx_hf"),
        },
        train_task="pawsx",
        max_seq_length=256,
        roles=("target",),
        citation="Yang et al. 2019",
        xtreme=Xtreme("classification", "accuracy"),
    )
)
