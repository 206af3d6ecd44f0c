"""The contamination audit per text field (xlt/audit/sets.py does whole examples).

A whole-example key misses a test paragraph under a new question, a test premise with a new
hypothesis, a test sentence quoted inside a training paragraph, and cannot compare examples of
different formats (a QA set against Tatoeba pairs). So each example is also split into its text
fields, each normalised as in :func:`normalise`:

- ``context``: a QA paragraph, a multiple-choice context;
- ``question``;
- ``premise`` / ``hypothesis``: the first and second text of a pair (NLI, PAWS-X);
- ``sentence``: a tagging sentence (its words), a Tatoeba or BUCC sentence;
- ``choice``: a multiple-choice answer.

A training field whose text equals any test text (of any field, any language) is counted per
field. A test ``sentence``, ``premise`` or ``hypothesis`` found inside a training ``context`` (at a
word start, on the normalised text) is counted as a sentence inside a paragraph. Texts shorter than
``MIN_TEXT_CHARS`` letters and digits are not compared (they recur in any corpus).

Field matches are reported; they stop nothing. Where the target's spec declares an exclusion with
``fields`` for a set (XQuAD: ``context`` for SQuAD dev), examples sharing such a field with the test
set are removed wherever the run reads that set, as whole-example matches are.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from xlt.tasks.spec import Example

SENTENCE_FIELDS = ("sentence", "premise", "hypothesis")
PARAGRAPH_FIELDS = ("context",)
_ANCHOR = 16  # characters of a test sentence's normalised start used to find it in a paragraph
_SPLIT = re.compile(r"[\W_]+")  # \w is str.isalnum() plus "_"


@functools.lru_cache(maxsize=65536)  # a SQuAD paragraph is the context of ~5 questions
def normalise(text: str) -> str:
    """NFKC, case-folded, letters and digits only (xlt/audit/sets.py's module docstring says why)."""
    return _SPLIT.sub("", unicodedata.normalize("NFKC", text).casefold())


def _words(text: str) -> list[str]:
    return [w for w in _SPLIT.split(unicodedata.normalize("NFKC", text).casefold()) if w]


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def field_texts(ex: Example) -> list[tuple[str, str]]:
    """(field, raw text) pairs of one example (see the module docstring)."""
    if "question" in ex and "context" in ex:
        return [("question", str(ex["question"])), ("context", str(ex["context"]))]
    if "text_a" in ex:
        out = [("premise", str(ex["text_a"]))]
        return out + ([("hypothesis", str(ex["text_b"]))] if ex.get("text_b") else [])
    if "words" in ex:
        return [("sentence", " ".join(map(str, ex["words"])))]
    if "choices" in ex:
        return [("context", str(ex.get("context", "")))] + [("choice", str(c)) for c in ex["choices"]]
    if "text" in ex and "en" in ex:
        return [("sentence", str(ex["text"])), ("sentence", str(ex["en"]))]
    if "src_texts" in ex:
        return [("sentence", str(t)) for t in (*ex["src_texts"], *ex["trg_texts"])]
    return []


def field_keys(ex: Example, min_chars: int) -> list[tuple[str, bytes]]:
    """(field, digest of its normalised text) for each field long enough to compare."""
    out = []
    for name, text in field_texts(ex):
        norm = normalise(text)
        if len(norm) >= min_chars:
            out.append((name, _digest(norm)))
    return out


@dataclass
class FieldIndex:
    """The test set's field digests (digest -> {(language, field)}) and its sentences by anchor."""

    min_chars: int
    keys: dict[bytes, set[tuple[str, str]]] = field(default_factory=dict)
    anchors: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # anchor -> [(sentence, lang)]
    sentences: int = 0
    originals: dict[str, str] = field(default_factory=dict)  # normalised sentence -> its text as read

    def add(self, lang: str, examples: Iterable[Example]) -> None:
        for ex in examples:
            for name, text in field_texts(ex):
                norm = normalise(text)
                if len(norm) < self.min_chars:
                    continue
                self.keys.setdefault(_digest(norm), set()).add((lang, name))
                if name in SENTENCE_FIELDS:
                    self.anchors.setdefault(norm[:_ANCHOR], []).append((norm, lang))
                    self.originals.setdefault(norm, text)
                    self.sentences += 1

    def inside(self, paragraph: str) -> set[tuple[str, str]]:
        """The test sentences (normalised, language) that occur in ``paragraph`` from a word start."""
        if not self.anchors:
            return set()
        words = _words(paragraph)
        flat = "".join(words)
        found: set[tuple[str, str]] = set()
        offset = 0
        anchors = self.anchors
        for word in words:
            hits = anchors.get(flat[offset : offset + _ANCHOR])
            if hits is not None:
                found.update(h for h in hits if flat.startswith(h[0], offset))
            offset += len(word)
        return found


@dataclass
class FieldAudit:
    """One training set's field-level overlap with the test set."""

    shared: dict[str, int] = field(default_factory=dict)  # training field -> examples sharing it
    shared_with: dict[str, set[str]] = field(default_factory=dict)  # training field -> test fields
    languages: dict[str, set[str]] = field(default_factory=dict)  # training field -> test languages
    inside_examples: int = 0  # training examples whose context holds a test sentence
    inside_paragraphs: set[bytes] = field(default_factory=set)  # the distinct such contexts (digests)
    originals: dict[str, str] = field(default_factory=dict)  # a found sentence (normalised) -> as read
    inside_sentences: dict[str, set[str]] = field(default_factory=dict)  # language -> sentences found
    excluded: int = 0  # examples removed for a declared field (not already whole-example matches)
    keys: set[bytes] = field(default_factory=set)  # the digests of the excluded fields that matched

    def record(self) -> dict:
        rec: dict = {}
        if self.shared:
            rec["shared_fields"] = {
                name: {
                    "examples": n,
                    "test_fields": sorted(self.shared_with[name]),
                    "test_languages": sorted(self.languages[name]),
                }
                for name, n in self.shared.items()
            }
        if self.inside_examples:
            rec["test_sentences_inside_paragraphs"] = {
                "paragraphs": len(self.inside_paragraphs),
                "paragraph_examples": self.inside_examples,
                "test_sentences": {lang: len(s) for lang, s in sorted(self.inside_sentences.items())},
                "sentences": {
                    lang: sorted(self.originals.get(x, x) for x in s)
                    for lang, s in sorted(self.inside_sentences.items())
                },
            }
        if self.excluded:
            rec["excluded_by_field"] = self.excluded
        return rec

    def describe(self) -> str:
        parts = []
        for name, n in self.shared.items():
            langs = ",".join(sorted(self.languages[name]))
            parts.append(
                f"{n} share their {name} with a test {'/'.join(sorted(self.shared_with[name]))} ({langs})"
            )
        if self.inside_examples:
            found = ", ".join(f"{lang} {len(s)}" for lang, s in sorted(self.inside_sentences.items()))
            parts.append(
                f"{len(self.inside_paragraphs)} distinct paragraphs ({self.inside_examples} examples) "
                f"hold test sentences ({found})"
            )
        return "; ".join(parts)

    def sentence_lines(self) -> list[str]:
        """The test sentences found inside training paragraphs (normalised), one line each, so the
        count can be checked by hand."""
        return [
            f"{lang}: {self.originals.get(sentence, sentence)}"
            for lang, found in sorted(self.inside_sentences.items())
            for sentence in sorted(found)
        ]


class FieldChecker:
    """Checks one training set's examples against a :class:`FieldIndex`, paragraphs scanned once."""

    def __init__(self, index: FieldIndex, excluded_fields: tuple[str, ...]) -> None:
        self.index = index
        self.excluded_fields = excluded_fields
        self.result = FieldAudit()
        self._scanned: dict[bytes, set[tuple[str, str]]] = {}

    def check(self, ex: Example, whole_match: bool) -> None:
        result, index = self.result, self.index
        hit_excluded = False
        counted: set[str] = set()
        for name, text in field_texts(ex):
            norm = normalise(text)
            if len(norm) < index.min_chars:
                continue
            key = _digest(norm)
            found = index.keys.get(key)
            if found and name not in counted:
                counted.add(name)
                result.shared[name] = result.shared.get(name, 0) + 1
                result.shared_with.setdefault(name, set()).update(f for _, f in found)
                result.languages.setdefault(name, set()).update(lang for lang, _ in found)
                if name in self.excluded_fields:
                    hit_excluded = True
                    result.keys.add(key)
            if name in PARAGRAPH_FIELDS and index.anchors:
                inside = self._scanned.get(key)
                if inside is None:
                    inside = self._scanned[key] = index.inside(text)
                if inside:
                    result.inside_examples += 1
                    result.inside_paragraphs.add(key)
                    for sentence, lang in inside:
                        result.inside_sentences.setdefault(lang, set()).add(sentence)
                        result.originals.setdefault(sentence, index.originals.get(sentence, sentence))
        if hit_excluded and not whole_match:
            result.excluded += 1
