"""Sentence retrieval without training data: Tatoeba (English queries, top-1 cosine) and BUCC 2018
(bitext mining from comparable corpora, ratio margin, threshold tuned on dev gold)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from xlt.tasks.rawio import pairs, text_lines
from xlt.tasks.registry import register_format, register_hub_mapper, register_task
from xlt.tasks.spec import DataError, Example, HubFile, RawFile, TaskSpec, Xtreme

# XTREME's 36 Tatoeba languages and LASER's three-letter codes for them (xtreme utils_preprocess.py),
# as "code:LASER" pairs.
TATOEBA_CODES = pairs(
    """
    ar:ara he:heb vi:vie id:ind jv:jav tl:tgl eu:eus ml:mal ta:tam te:tel af:afr nl:nld de:deu el:ell bn:ben
    hi:hin mr:mar ur:urd fa:pes fr:fra it:ita pt:por es:spa bg:bul ru:rus ja:jpn ka:kat ko:kor th:tha sw:swh
    zh:cmn kk:kaz tr:tur et:est fi:fin hu:hun
    """
)


@register_format("laser_tatoeba")
def read_laser_tatoeba(path: Path, lang: str) -> Iterator[Example]:
    """LASER ``tatoeba.{xxx}-eng.{xxx}`` with its line-aligned English sibling ``.eng`` (gold = same line)."""
    en_path = path.with_suffix(".eng")
    if not en_path.is_file():
        raise DataError(f"{en_path}: missing (the English side of {path})")
    src, eng = text_lines(path), text_lines(en_path)
    if len(src) != len(eng):
        raise DataError(
            f"{path}: {len(src)} lines but {en_path.name} has {len(eng)} (expected line-aligned pairs)"
        )
    for lineno, (x, e) in enumerate(zip(src, eng, strict=True), 1):
        if not x.strip() or not e.strip():
            raise DataError(f"{path}:{lineno}: empty sentence in a Tatoeba pair")
        yield {"text": x.strip(), "en": e.strip()}


@register_hub_mapper("tatoeba_hf")
def map_hub_tatoeba(row: Mapping[str, Any], lang: str) -> Example | None:
    # google/xtreme tatoeba.{xxx}: source_sentence is the non-English side, target_sentence English.
    return {"text": row["source_sentence"].strip(), "en": row["target_sentence"].strip()}


TATOEBA = register_task(
    TaskSpec(
        name="tatoeba",
        description="Tatoeba (LASER v1): English queries, top-1 cosine over mean-pooled layer embeddings",
        head="retrieval",
        metrics=("acc",),
        languages=tuple(TATOEBA_CODES),
        lang3=TATOEBA_CODES,
        raw={
            "test": (
                RawFile("tatoeba/tatoeba.{lang3}-eng.{lang3}", "laser_tatoeba"),
                RawFile(
                    "tatoeba/v1/tatoeba.{lang3}-eng.{lang3}", "laser_tatoeba"
                ),  # LASER's data/tatoeba/v1/
                RawFile("LASER/data/tatoeba/v1/tatoeba.{lang3}-eng.{lang3}", "laser_tatoeba"),
            )
        },
        hub={"test": HubFile("google/xtreme", "tatoeba.{lang3}", "validation", "tatoeba_hf")},
        dev_split="",
        max_seq_length=512,
        roles=("target", "probe"),
        citation="Artetxe and Schwenk 2019",
        retrieval="top1",
        xtreme=Xtreme("retrieval", "accuracy"),
    )
)


def _read_id_sentences(path: Path) -> tuple[list[str], list[str], dict[str, int]]:
    """``id<TAB>sentence`` lines -> (ids, sentences, id -> line number)."""
    ids: list[str] = []
    texts: list[str] = []
    line_of: dict[str, int] = {}
    for lineno, line in enumerate(text_lines(path), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        where = f"{path}:{lineno}"
        if len(fields) != 2:
            raise DataError(f"{where}: expected 'id<TAB>sentence', got {len(fields)} tab-separated field(s)")
        sid, text = fields[0].strip(), fields[1].strip()
        if not sid or not text:
            raise DataError(
                f"{where}: expected 'id<TAB>sentence', got an empty {'id' if not sid else 'sentence'}"
            )
        if sid in line_of:
            raise DataError(f"{where}: id {sid!r} repeats line {line_of[sid]}")
        line_of[sid] = lineno
        ids.append(sid)
        texts.append(text)
    if not ids:
        raise DataError(f"{path}: no 'id<TAB>sentence' lines")
    return ids, texts, line_of


@register_format("bucc_corpus")
def read_bucc_corpus(path: Path, lang: str) -> Iterator[Example]:
    """One BUCC 2018 language pair of one split as a single example: ``{l}-en.{split}.{l}`` (this
    path) and its siblings ``.en`` (English, ``id<TAB>sentence``) and ``.gold`` (``l_id<TAB>en_id``;
    absent for XTREME's test split, whose gold is withheld: then ``gold`` is None)."""
    en_path, gold_path = path.with_suffix(".en"), path.with_suffix(".gold")
    if not en_path.is_file():
        raise DataError(f"{en_path}: missing (the English side of {path})")
    src_ids, src_texts, src_lines = _read_id_sentences(path)
    trg_ids, trg_texts, trg_lines = _read_id_sentences(en_path)
    gold: list[tuple[str, str]] | None = None
    if gold_path.is_file():
        gold = []
        seen: dict[tuple[str, str], int] = {}
        for lineno, raw in enumerate(text_lines(gold_path), 1):
            if not raw.strip():
                continue
            parts = [part.strip() for part in raw.split("\t")]
            where = f"{gold_path}:{lineno}"
            if len(parts) != 2:
                raise DataError(
                    f"{where}: expected '{lang}_id<TAB>en_id', got {len(parts)} tab-separated field(s)"
                )
            for sid, lines, side in ((parts[0], src_lines, path), (parts[1], trg_lines, en_path)):
                if sid not in lines:
                    raise DataError(f"{where}: id {sid!r} is not in {side}")
            pair = (parts[0], parts[1])
            if pair in seen:  # counted twice, it would raise recall and lower precision
                raise DataError(f"{where}: the pair {parts[0]}<TAB>{parts[1]} repeats line {seen[pair]}")
            seen[pair] = lineno
            gold.append(pair)
    yield {
        "src_ids": src_ids,
        "src_texts": src_texts,
        "trg_ids": trg_ids,
        "trg_texts": trg_texts,
        "gold": gold,
    }


def _bucc_layouts(xtreme_split: str, bucc_split: str) -> tuple[RawFile, ...]:
    # XTREME's download renames BUCC's "sample" split to dev and "training" to test; the original
    # tarballs unpack to bucc2018/{l}-en/{l}-en.{sample,training}.*; a copy one folder deeper (e.g.
    # the TFDS fixture bucc2018/tfds_dummy/fr-en/) is read too.
    return (
        RawFile(f"bucc2018/{{lang}}-en.{xtreme_split}.{{lang}}", "bucc_corpus"),
        RawFile(f"bucc2018/{{lang}}-en/{{lang}}-en.{bucc_split}.{{lang}}", "bucc_corpus"),
        RawFile(f"bucc2018/*/{{lang}}-en/{{lang}}-en.{bucc_split}.{{lang}}", "bucc_corpus"),
    )


BUCC2018 = register_task(
    TaskSpec(
        name="bucc2018",
        description="BUCC 2018 bitext mining: ratio margin (k=4) over mean-pooled layer embeddings, "
        "F1-optimal threshold tuned on dev gold and frozen for test",
        head="retrieval",
        metrics=("f1", "precision", "recall"),
        languages=("de", "fr", "ru", "zh"),
        # dev = BUCC "sample" (gold used to tune the threshold), test = BUCC "training".
        raw={"dev": _bucc_layouts("dev", "sample"), "test": _bucc_layouts("test", "training")},
        hub_unusable="the hub's google/xtreme bucc18.* configs hold only the gold pairs, not the "
        "comparable corpora, so nothing can be mined from them; use data.source=local with the raw "
        "BUCC 2018 files",
        dev_split="dev",
        max_seq_length=512,
        roles=("target",),
        citation="Zweigenbaum et al. 2018",
        retrieval="mining",
        xtreme=Xtreme("retrieval", "bucc_f1"),
    )
)
