"""What the contamination audit (:mod:`xlt.audit`) compares: an example's text keys (the digests
of its normalised fields) and id, and what a declared exclusion removes from a set (:class:`Removal`),
which the data modules apply wherever the run reads that set. A module of its own so that the data
layer reads it without the audit's run-level code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from xlt.audit.fields import field_keys, normalise
from xlt.tasks.spec import DataError, Example

SEP = "\x1f"  # between the normalised fields of one example
# An example with fewer letters and digits than this is compared by id only: "Thank you.", "Kind
# regards", "1." or a punctuation-only line recur in any large corpus (UD English EWT's train and test
# share 438 such sentences); their match is language, not a copied test set.
MIN_TEXT_CHARS = 20


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def text_keys(ex: Example) -> list[bytes]:
    """The digests of an example's normalised text (one per example; one per sentence for a BUCC corpus)."""
    if "question" in ex and "context" in ex:
        fields: list[Any] = [ex["question"], ex["context"]]
    elif "text_a" in ex:
        fields = [ex["text_a"], ex.get("text_b") or ""]
    elif "words" in ex:
        fields = [" ".join(ex["words"])]
    elif "choices" in ex:
        fields = [ex.get("context", ""), *ex["choices"]]
    elif "text" in ex and "en" in ex:
        fields = [ex["text"], ex["en"]]
    elif "src_texts" in ex:
        texts = [normalise(t) for t in (*ex["src_texts"], *ex["trg_texts"])]
        return [_digest(t) for t in texts if len(t) >= MIN_TEXT_CHARS]
    else:
        raise DataError(f"audit: no text fields to compare in an example with fields {sorted(ex)}")
    parts = [normalise(str(f)) for f in fields]
    if sum(map(len, parts)) < MIN_TEXT_CHARS:
        return []
    return [_digest(SEP.join(parts))]


def example_id(ex: Example) -> str | None:
    ident = ex.get("id")
    return None if ident is None or str(ident) == "" else str(ident)


@dataclass(frozen=True)
class Removal:
    """What a declared exclusion removes from one set (``task/split``): these ids and text digests."""

    name: str
    ids: frozenset[str]
    keys: frozenset[bytes]
    because: str  # the test set(s) the examples are in
    fields: tuple[str, ...] = ()  # text fields whose digests (field_keys) also remove an example
    field_keys: frozenset[bytes] = frozenset()

    def matches(self, ex: Example) -> bool:
        ident = example_id(ex)
        if (ident is not None and ident in self.ids) or any(k in self.keys for k in text_keys(ex)):
            return True
        return bool(self.field_keys) and any(
            name in self.fields and key in self.field_keys for name, key in field_keys(ex, MIN_TEXT_CHARS)
        )

    @property
    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        for item in sorted(self.ids):
            h.update(item.encode() + b"\0")
        for key in sorted(self.keys):
            h.update(key)
        if self.field_keys:
            h.update(("|fields:" + ",".join(self.fields)).encode())
            for key in sorted(self.field_keys):
                h.update(key)
        return h.hexdigest()


def apply_removal(examples: list[Example], removal: Removal | None) -> list[Example]:
    return examples if removal is None else [ex for ex in examples if not removal.matches(ex)]
