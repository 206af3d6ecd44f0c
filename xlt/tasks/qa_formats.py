"""The span-QA tasks' file formats and hub rows: SQuAD v1.1/v2.0 JSON, MLQA, TyDiQA-GoldP (whose
files mix its nine languages), each read into the span-QA example layout (``id``, ``question``,
``context``, ``answers``, ``is_impossible``); the metric names the span-QA head reports. The task
specs that use them are :mod:`xlt.tasks.qa`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from xlt.tasks.hub import realign_answer
from xlt.tasks.rawio import read_text
from xlt.tasks.registry import register_format, register_hub_mapper
from xlt.tasks.spec import OTHER_LANGUAGE, DataError, Example

log = logging.getLogger(__name__)

# Metric names the span-QA head reports per scoring rule; ``score`` is XTREME's (EM + F1) / 2 (and
# jiant's "major" QA metric, its early-stopping criterion), so it comes first: it selects checkpoints.
QA_METRICS = ("score", "em", "f1")
# SQuAD v2.0 adds the official script's HasAns/NoAns splits and its best-threshold search.
SQUAD_V2_METRICS = (
    *QA_METRICS,
    "has_ans_em",
    "has_ans_f1",
    "no_ans_em",
    "no_ans_f1",
    "best_em",
    "best_f1",
    "best_f1_thresh",
)
SCORINGS = ("squad", "squad_v2", "mlqa")

# TyDiQA-GoldP's nine languages (evaluate.py's order): its ids start with the language's English name
# ("english-1234...-0"); the official train and dev files mix all nine languages.
TYDIQA_LANGUAGE_NAMES = {
    "en": "english",
    "ar": "arabic",
    "bn": "bengali",
    "fi": "finnish",
    "id": "indonesian",
    "ko": "korean",
    "ru": "russian",
    "sw": "swahili",
    "te": "telugu",
}
STRIPPED_HINT = (
    "the answers look stripped (XTREME's download script removes test labels); point data.dir at the "
    "original files"
)


def _qa_example(
    context: str,
    qa: Mapping[str, Any],
    answers: Sequence[Mapping[str, Any]],
    where: str,
    impossible: bool | None = None,
) -> Example:
    """Validate one question of a SQuAD-format record and return it in the span-QA layout.

    ``impossible`` is None for SQuAD v1.1 semantics (every question has an answer); otherwise the
    question's SQuAD v2.0 ``is_impossible`` flag.
    """
    qid = qa.get("id")
    if qid is None or str(qid) == "":
        raise DataError(f"{where}: missing field 'id'")
    where = f"{where} id={qid}"
    question = qa.get("question")
    if question is None:
        raise DataError(f"{where}: missing field 'question'")
    question = str(question).strip()
    if not question:
        raise DataError(f"{where}: empty question")
    if not context.strip():
        raise DataError(f"{where}: empty context")
    if isinstance(answers, str | bytes) or not isinstance(answers, Sequence):
        raise DataError(f"{where}: 'answers' must be a list, got {type(answers).__name__}")
    checked = []
    for i, answer in enumerate(answers):
        if not isinstance(answer, Mapping) or "text" not in answer or "answer_start" not in answer:
            raise DataError(f"{where}: answer {i} needs 'text' and 'answer_start', got {answer!r}")
        text, start = answer["text"], answer["answer_start"]
        if not isinstance(start, int) or isinstance(start, bool):
            raise DataError(f"{where}: answer {i} has a non-integer answer_start {start!r}")
        if not text:
            raise DataError(f"{where}: answer {i} is empty; {STRIPPED_HINT}")
        found = context[start : start + len(text)]
        if start < 0 or found != text:
            raise DataError(
                f"{where}: answer {i} {text!r} does not match the context at answer_start={start} (found {found!r})"
            )
        checked.append({"text": text, "answer_start": start})
    if impossible is None:
        if not checked:
            raise DataError(f"{where}: no answer (SQuAD v1.1-style data needs one); {STRIPPED_HINT}")
        impossible = False
    elif impossible and checked:
        raise DataError(f"{where}: is_impossible is true but the question has {len(checked)} answers")
    elif not impossible and not checked:
        raise DataError(f"{where}: no answer but is_impossible is false")
    return {
        "id": str(qid),
        "question": question,
        "context": context,
        "answers": checked,
        "is_impossible": impossible,
    }


def _load_json(path: Path) -> list[Mapping[str, Any]]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not a JSON file ({err.msg} at column {err.colno})") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("data"), list):
        raise DataError(f"{path}: expected a SQuAD-format object with a 'data' list of articles")
    return data["data"]


def _id_line(path: Path, qid: str) -> str:
    """``path:N`` of the second question with id ``qid`` (the line of its ``"id"`` key), else ``path``."""
    pattern = re.compile(r'"id"\s*:\s*' + re.escape(json.dumps(qid)))
    text = read_text(path)
    matches = list(pattern.finditer(text))
    if len(matches) < 2:
        return str(path)
    return f"{path}:{text.count(chr(10), 0, matches[1].start()) + 1}"


def _squad_records(path: Path) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """(where, context, qa) for every question of a SQuAD-format file, in file order. Ids must be
    unique: predictions and the official scripts key answers by id (a repeated id would be scored
    by the run and lost from the predictions file)."""
    seen: dict[str, str] = {}
    for a, article in enumerate(_load_json(path)):
        paragraphs = article.get("paragraphs") if isinstance(article, Mapping) else None
        if not isinstance(paragraphs, list):
            raise DataError(f"{path}: article {a}: missing field 'paragraphs'")
        for p, paragraph in enumerate(paragraphs):
            where = f"{path}: article {a} paragraph {p}"
            if not isinstance(paragraph, Mapping) or "context" not in paragraph:
                raise DataError(f"{where}: missing field 'context'")
            if not isinstance(paragraph.get("qas"), list):
                raise DataError(f"{where}: missing field 'qas'")
            for qa in paragraph["qas"]:
                if not isinstance(qa, Mapping):
                    raise DataError(f"{where}: a question is not an object ({qa!r})")
                if "answers" not in qa:
                    raise DataError(f"{where} id={qa.get('id')}: missing field 'answers'")
                qid = str(qa.get("id", ""))
                if qid and qid in seen:
                    raise DataError(
                        f"{_id_line(path, qid)}: {where.split(': ', 1)[1]}: question id {qid!r} repeats "
                        f"the id of {seen[qid]} (ids must be unique)"
                    )
                seen[qid] = where.split(": ", 1)[1]
                yield where, str(paragraph["context"]), qa


@register_format("squad_v1_json")
def read_squad_v1(path: Path, lang: str) -> Iterator[Example]:
    """SQuAD v1.1 JSON (also XQuAD and the XTREME per-language TyDiQA files): scored by SQuAD v1.1 rules."""
    for where, context, qa in _squad_records(path):
        yield _qa_example(context, qa, qa["answers"], where)


@register_format("squad_v2_json")
def read_squad_v2(path: Path, lang: str) -> Iterator[Example]:
    """SQuAD v2.0 JSON: ``is_impossible`` questions have no answers (``plausible_answers`` are ignored)."""
    for where, context, qa in _squad_records(path):
        impossible = qa.get("is_impossible", not qa["answers"])
        if not isinstance(impossible, bool):
            raise DataError(
                f"{where} id={qa.get('id')}: is_impossible must be true or false, got {impossible!r}"
            )
        yield _qa_example(context, qa, qa["answers"], where, impossible=impossible)


@register_format("mlqa_json")
def read_mlqa(path: Path, lang: str) -> Iterator[Example]:
    """MLQA v1 ``{dev,test}-context-{l}-question-{l}.json`` (SQuAD v1.1 JSON): scored by MLQA's rules for ``lang``."""
    for where, context, qa in _squad_records(path):
        yield _qa_example(context, qa, qa["answers"], where)


def tydiqa_language(qid: str, where: str) -> str:
    """The ISO code of a TyDiQA-GoldP id's language prefix (``english-...`` -> ``en``)."""
    prefix = qid.split("-", 1)[0]
    for iso, name in TYDIQA_LANGUAGE_NAMES.items():
        if prefix == name:
            return iso
    raise DataError(
        f"{where} id={qid}: no TyDiQA language prefix (expected one of {', '.join(TYDIQA_LANGUAGE_NAMES.values())})"
    )


@register_format("tydiqa_goldp_json")
def read_tydiqa_goldp(path: Path, lang: str) -> Iterator[Example]:
    """The official multilingual ``tydiqa-goldp-v1.1-{train,dev}.json``: only ``lang``'s questions.

    The language is the id prefix. Reading English *training* data from the full train file keeps
    the 3,696 ``english-`` questions: jiant's downloader writes the whole multilingual file as
    ``tydiqa_en`` (and the hub's config mixes languages too), which breaks zero-shot transfer.
    """
    if lang not in TYDIQA_LANGUAGE_NAMES:
        raise DataError(f"{path}: TyDiQA-GoldP has no language {lang!r}")
    kept = total = 0
    for where, context, qa in _squad_records(path):
        total += 1
        if tydiqa_language(str(qa.get("id", "")), where) != lang:
            continue
        kept += 1
        yield _qa_example(context, qa, qa["answers"], where)
    log.info("%s: kept the %d %s questions of %d (the file mixes languages)", path, kept, lang, total)


def _hub_answers(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    # Hub QA datasets store answers as a struct of lists: {"text": [...], "answer_start": [...]}.
    answers = row.get("answers") or {}
    texts, starts = list(answers.get("text", [])), list(answers.get("answer_start", []))
    return [{"text": t, "answer_start": int(s)} for t, s in zip(texts, starts, strict=True)]


def _hub_example(row: Mapping[str, Any], impossible: bool | None = None) -> Example:
    """A hub QA row. The XTREME and TyDiQA builders strip the context and each answer text but keep
    the original ``answer_start``: an answer not at its offset is moved to its nearest occurrence in
    the context (xlt/tasks/hub.py) and the row marked ``_realigned``; an answer that occurs nowhere
    in its context is a DataError naming the row's id (the loader adds dataset, config and split)."""
    context = str(row.get("context", ""))
    answers, moved = [], False
    for i, answer in enumerate(_hub_answers(row)):
        start = realign_answer(context, answer["text"], answer["answer_start"]) if answer["text"] else None
        if answer["text"] and start is None:
            raise DataError(f"id={row.get('id')}: answer {i} {answer['text']!r} is not in its context")
        if start is not None and start != answer["answer_start"]:
            answer, moved = {"text": answer["text"], "answer_start": start}, True
        answers.append(answer)
    example = _qa_example(context, row, answers, "hub row", impossible)
    if moved:
        example["_realigned"] = True
    return example


@register_hub_mapper("squad_hf")
def map_hub_squad(row: Mapping[str, Any], lang: str) -> Example | None:
    """``rajpurkar/squad``, ``google/xtreme`` XQuAD.{lang}: id, context, question, answers."""
    return _hub_example(row)


@register_hub_mapper("squad_v2_hf")
def map_hub_squad_v2(row: Mapping[str, Any], lang: str) -> Example | None:
    """``rajpurkar/squad_v2``: a question without answers is a no-answer question."""
    return _hub_example(row, impossible=not _hub_answers(row))


@register_hub_mapper("mlqa_hf")
def map_hub_mlqa(row: Mapping[str, Any], lang: str) -> Example | None:
    """``google/xtreme`` MLQA.{lang}.{lang}."""
    return _hub_example(row)


@register_hub_mapper("tydiqa_hf")
def map_hub_tydiqa(row: Mapping[str, Any], lang: str) -> Example | None:
    """``google-research-datasets/tydiqa`` secondary_task (all languages in one split): ``lang``'s rows only."""
    if tydiqa_language(str(row.get("id", "")), "hub row") != lang:
        return OTHER_LANGUAGE  # the config mixes languages: filtered, not dropped
    return _hub_example(row)
