"""Sentence retrieval without training data: Tatoeba (English queries, top-1 cosine)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from xlt.tasks.registry import register_format, register_hub_mapper, register_task
from xlt.tasks.spec import DataError, Example, HubFile, RawFile, TaskSpec

# XTREME's 36 Tatoeba languages and LASER's three-letter codes for them (xtreme utils_preprocess.py).
TATOEBA_CODES = {
    "ar": "ara", "he": "heb", "vi": "vie", "id": "ind", "jv": "jav", "tl": "tgl", "eu": "eus", "ml": "mal",
    "ta": "tam", "te": "tel", "af": "afr", "nl": "nld", "de": "deu", "el": "ell", "bn": "ben", "hi": "hin",
    "mr": "mar", "ur": "urd", "fa": "pes", "fr": "fra", "it": "ita", "pt": "por", "es": "spa", "bg": "bul",
    "ru": "rus", "ja": "jpn", "ka": "kat", "ko": "kor", "th": "tha", "sw": "swh", "zh": "cmn", "kk": "kaz",
    "tr": "tur", "et": "est", "fi": "fin", "hu": "hun",
}  # fmt: skip


@register_format("laser_tatoeba")
def read_laser_tatoeba(path: Path, lang: str) -> Iterator[Example]:
    """LASER ``tatoeba.{xxx}-eng.{xxx}`` with its line-aligned English sibling ``.eng`` (gold = same line)."""
    en_path = path.with_suffix(".eng")
    if not en_path.is_file():
        raise DataError(f"{en_path}: missing (the English side of {path})")
    src = path.read_text(encoding="utf-8").splitlines()
    eng = en_path.read_text(encoding="utf-8").splitlines()
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
        raw={"test": (RawFile("tatoeba/tatoeba.{lang3}-eng.{lang3}", "laser_tatoeba"),)},
        hub={"test": HubFile("google/xtreme", "tatoeba.{lang3}", "validation", "tatoeba_hf")},
        dev_split="",
        max_seq_length=512,
        roles=("target", "probe"),
        citation="Artetxe and Schwenk 2019",
    )
)
