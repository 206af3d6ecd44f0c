"""Multiple choice: HellaSwag, Cosmos QA and CommonsenseQA, their original file formats and hub ids.

Every example is ``{"context": str, "choices": [str, ...], "label": int}``; the featuriser pairs the
context with each choice, and the ``multiple_choice`` head scores each pair with one output unit and
takes a softmax over the choices. Prompt and choices are built as in jiant's task classes
(``jiant/tasks/lib/{hellaswag,cosmosqa,commonsenseqa}.py``):

- HellaSwag: context ``ctx_a``; choice ``ctx_b + " " + ending``.
- Cosmos QA: context ``context + " " + question``; choices ``answer0..3``.
- CommonsenseQA: context ``question.stem``; choices in the order of the keys A-E.

The three test sets have hidden labels, so these intermediate tasks select and report on dev.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from xlt.tasks.hub import PARQUET_EXPORT
from xlt.tasks.rawio import csv_records, jsonl_records, require, text_lines
from xlt.tasks.registry import register_format, register_hub_mapper, register_task
from xlt.tasks.spec import DataError, Example, HubFile, RawFile, TaskSpec

CSQA_KEYS = ("A", "B", "C", "D", "E")
FOUR_CHOICES = ("0", "1", "2", "3")


def mc_example(context: str, choices: Sequence[Any], label: Any, n_choices: int, where: str) -> Example:
    """A checked example: ``n_choices`` non-empty choices and a label index in range."""
    if not choices:
        raise DataError(f"{where}: empty choice list (expected {n_choices} choices)")
    if len(choices) != n_choices:
        raise DataError(f"{where}: {len(choices)} choices, expected {n_choices}")
    texts = [str(c).strip() for c in choices]
    if any(not t for t in texts):
        raise DataError(f"{where}: choice {[i for i, t in enumerate(texts) if not t][0]} is empty")
    try:
        index = int(label)
    except (TypeError, ValueError):
        raise DataError(
            f"{where}: label {label!r} is not a choice index (expected 0..{n_choices - 1})"
        ) from None
    if not 0 <= index < n_choices:
        raise DataError(f"{where}: label {index} out of range (expected 0..{n_choices - 1})")
    if not str(context).strip():
        raise DataError(f"{where}: empty context")
    return {"context": str(context).strip(), "choices": texts, "label": index}


# -- HellaSwag ---------------------------------------------------------------------------------------


def _hellaswag(ctx_a: str, ctx_b: str, endings: Any, label: Any, where: str) -> Example:
    if not isinstance(endings, list):
        raise DataError(f"{where}: 'endings' is not a list")
    choices = [f"{ctx_b} {ending}".strip() for ending in endings]
    return mc_example(ctx_a, choices, label, 4, where)


@register_format("hellaswag_jsonl")
def read_hellaswag_jsonl(path: Path, lang: str) -> Iterator[Example]:
    """Official ``hellaswag_{train,val}.jsonl``: ``ctx_a``, ``ctx_b``, ``endings`` (4), ``label``."""
    for where, row in jsonl_records(path):
        yield _hellaswag(
            str(require(row, "ctx_a", where)),
            str(row.get("ctx_b") or ""),
            require(row, "endings", where),
            require(row, "label", where),
            where,
        )


@register_format("hellaswag_text6")
def read_hellaswag_text6(path: Path, lang: str) -> Iterator[Example]:
    """The derived 6-lines-per-example layout (``hellaswag_val_full.txt``): ``activity_label: ctx``,
    the gold index, then the four endings.

    This layout lost the ``ctx_a``/``ctx_b`` split, so the whole ``ctx`` (activity label removed) is the
    context and each ending alone is a choice; jiant moves ``ctx_b`` into every choice instead. The
    text is the same, only the segment boundary differs.
    """
    lines = text_lines(path)
    if len(lines) % 6:
        raise DataError(
            f"{path}: {len(lines)} lines, not a multiple of 6 (context, label, 4 endings per example)"
        )
    for start in range(0, len(lines), 6):
        where = f"{path}:{start + 1}"
        head, label, *endings = lines[start : start + 6]
        _, sep, ctx = head.partition(": ")
        if not sep:
            raise DataError(f"{where}: expected 'activity label: context', got {head[:60]!r}")
        yield mc_example(ctx, endings, label.strip(), 4, where)


@register_hub_mapper("hellaswag_hf")
def map_hub_hellaswag(row: Mapping[str, Any], lang: str) -> Example | None:
    if row["label"] in ("", None):  # the test split's hidden labels
        return None
    return _hellaswag(
        row["ctx_a"], row["ctx_b"] or "", list(row["endings"]), row["label"], "hub Rowan/hellaswag row"
    )


# -- Cosmos QA ---------------------------------------------------------------------------------------

COSMOS_FIELDS = ("context", "question", "answer0", "answer1", "answer2", "answer3", "label")


def _cosmos(row: Mapping[str, Any], where: str) -> Example:
    for name in COSMOS_FIELDS:
        require(row, name, where)
    choices = [row[f"answer{i}"] for i in range(4)]
    return mc_example(
        f"{str(row['context']).strip()} {str(row['question']).strip()}", choices, row["label"], 4, where
    )


@register_format("cosmosqa_csv")
def read_cosmosqa_csv(path: Path, lang: str) -> Iterator[Example]:
    """Official ``{train,valid}.csv``: ``id,context,question,answer0..answer3,label``."""
    for where, row in csv_records(path, COSMOS_FIELDS):
        yield _cosmos(row, f"{where} (id {row.get('id')})")


@register_hub_mapper("cosmosqa_hf")
def map_hub_cosmosqa(row: Mapping[str, Any], lang: str) -> Example | None:
    if int(row["label"]) < 0:  # hidden test labels
        return None
    return _cosmos(row, f"hub allenai/cosmos_qa id {row.get('id')}")


# -- CommonsenseQA -----------------------------------------------------------------------------------


def _csqa(stem: Any, keys: Sequence[Any], texts: Sequence[Any], answer: Any, where: str) -> Example:
    if not keys:
        raise DataError(f"{where}: empty choice list (expected {len(CSQA_KEYS)} choices)")
    if len(keys) != len(CSQA_KEYS):
        raise DataError(f"{where}: {len(keys)} choices, expected {len(CSQA_KEYS)}")
    if sorted(map(str, keys)) != list(CSQA_KEYS):
        raise DataError(f"{where}: choice keys {list(keys)}, expected {list(CSQA_KEYS)}")
    by_key = dict(zip(map(str, keys), texts, strict=True))
    if answer not in CSQA_KEYS:
        raise DataError(f"{where}: answerKey {answer!r} out of range (expected one of {list(CSQA_KEYS)})")
    return mc_example(stem, [by_key[k] for k in CSQA_KEYS], CSQA_KEYS.index(answer), len(CSQA_KEYS), where)


@register_format("csqa_jsonl")
def read_csqa_jsonl(path: Path, lang: str) -> Iterator[Example]:
    """Official v1.11 ``{train,dev}_rand_split.jsonl``: ``question.stem``, ``question.choices``
    (``label`` A-E, ``text``), ``answerKey``."""
    for where, row in jsonl_records(path):
        where = f"{where} (id {row.get('id')})"
        question = require(row, "question", where)
        if not isinstance(question, dict):
            raise DataError(f"{where}: 'question' is not an object")
        choices = question.get("choices") or []
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise DataError(f"{where}: 'question.choices' is not a list of objects")
        keys = [c.get("label") for c in choices]
        texts = [c.get("text", "") for c in choices]
        yield _csqa(require(question, "stem", where), keys, texts, require(row, "answerKey", where), where)


@register_hub_mapper("csqa_hf")
def map_hub_csqa(row: Mapping[str, Any], lang: str) -> Example | None:
    if not row["answerKey"]:  # hidden test labels
        return None
    where = f"hub tau/commonsense_qa id {row.get('id')}"
    return _csqa(row["question"], row["choices"]["label"], row["choices"]["text"], row["answerKey"], where)


# -- Specs -------------------------------------------------------------------------------------------


def _mc_spec(**kwargs: Any) -> TaskSpec:
    return TaskSpec(
        head="multiple_choice",
        metrics=("acc",),
        languages=("en",),
        roles=("intermediate",),
        max_seq_length=256,  # jiant's simple-API length (X-STILTs intermediate tasks)
        **kwargs,
    )


HELLASWAG = register_task(
    _mc_spec(
        name="hellaswag",
        train_sizes={
            "train": (39_905, "HellaSwag train (HF Rowan/hellaswag)"),
        },
        description="HellaSwag (4 endings); test labels are hidden, so dev = the official val split",
        label_names=FOUR_CHOICES,
        raw={
            "train": (
                RawFile("hellaswag/hellaswag_train.jsonl", "hellaswag_jsonl"),
                RawFile("hellaswag/data/hellaswag_train.jsonl", "hellaswag_jsonl"),
            ),
            "dev": (
                RawFile("hellaswag/hellaswag_val.jsonl", "hellaswag_jsonl"),
                RawFile("hellaswag/data/hellaswag_val.jsonl", "hellaswag_jsonl"),
                RawFile("hellaswag/hellaswag_val_full.txt", "hellaswag_text6"),
            ),
        },
        hub={
            "train": HubFile("Rowan/hellaswag", None, "train", "hellaswag_hf"),
            "dev": HubFile("Rowan/hellaswag", None, "validation", "hellaswag_hf"),
        },
        citation="Zellers et al. 2019",
    )
)

COSMOSQA = register_task(
    _mc_spec(
        name="cosmosqa",
        train_sizes={
            "train": (25_262, "Cosmos QA train (TFDS cosmos_qa)"),
        },
        description="Cosmos QA (4 answers, context + question as prompt); dev = the official valid split",
        label_names=FOUR_CHOICES,
        raw={
            "train": (
                RawFile("cosmosqa/train.csv", "cosmosqa_csv"),
                RawFile("cosmosqa/data/train.csv", "cosmosqa_csv"),
            ),
            "dev": (
                RawFile("cosmosqa/valid.csv", "cosmosqa_csv"),
                RawFile("cosmosqa/data/valid.csv", "cosmosqa_csv"),
            ),
        },
        hub={
            # allenai/cosmos_qa is still a loading script, which datasets refuses: read the hub's
            # parquet export of it (the script's features: id, context, question, answer0-3, label).
            "train": HubFile("allenai/cosmos_qa", None, "train", "cosmosqa_hf", revision=PARQUET_EXPORT),
            "dev": HubFile("allenai/cosmos_qa", None, "validation", "cosmosqa_hf", revision=PARQUET_EXPORT),
        },
        citation="Huang et al. 2019",
    )
)

CSQA = register_task(
    _mc_spec(
        name="csqa",
        train_sizes={
            "train": (9_741, "CommonsenseQA v1.11 train"),
        },
        description="CommonsenseQA v1.11 (5 answers A-E, random split); dev = dev_rand_split",
        label_names=CSQA_KEYS,
        raw={
            "train": (RawFile("commonsenseqa/train_rand_split.jsonl", "csqa_jsonl"),),
            "dev": (RawFile("commonsenseqa/dev_rand_split.jsonl", "csqa_jsonl"),),
        },
        hub={
            "train": HubFile("tau/commonsense_qa", None, "train", "csqa_hf"),
            "dev": HubFile("tau/commonsense_qa", None, "validation", "csqa_hf"),
        },
        citation="Talmor et al. 2019",
    )
)
