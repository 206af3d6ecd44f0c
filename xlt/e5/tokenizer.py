"""The XLM-R Unigram tokenizer of an ``E5S1`` file: its pieces and scores, the ``nmt_nfkc``
normalisation rebuilt as a SentencePiece precompiled charsmap, and the Hugging Face tokenizer files."""

from __future__ import annotations

import itertools
import struct
import unicodedata

import numpy as np

from xlt.e5.format import _MASK_PIECE, _SPECIAL_PIECES, E5File

_META = "\u2581"


def nmt_nfkc_rules(single_codepoint: dict[str, str]) -> dict[str, str]:
    """SentencePiece ``nmt_nfkc`` rules: the file's per-codepoint map plus the composing rules it lacks.

    XLM-R's charsmap also maps short multi-codepoint sequences (a base letter or one of its
    compatibility variants followed by combining marks, e.g. ``e`` + U+0301 -> ``é``) to their NFKC
    form. The file keeps only the single-codepoint rules (what e5.c applies), so the rest are
    regenerated the way SentencePiece's builder does, from every canonical decomposition, dropping
    rules that the single-codepoint ones already imply. Hugging Face's ``Precompiled`` normaliser only
    ever looks up whole grapheme clusters shorter than 6 UTF-8 bytes (or single characters), so
    longer keys could never match and are left out; with that cut the rule set equals XLM-R's.
    """
    variants: dict[str, list[str]] = {}
    for src, dst in single_codepoint.items():
        if len(dst) == 1 and dst != src:
            variants.setdefault(dst, []).append(src)
    rules = dict(single_codepoint)
    for cp in range(0x80, 0x30000):
        if 0xD800 <= cp < 0xE000 or unicodedata.is_normalized("NFD", chr(cp)):
            continue
        decomposed = unicodedata.normalize("NFD", chr(cp))
        if len(decomposed) < 2:
            continue
        options = [[c, *sorted(variants.get(c, ()))] for c in decomposed]
        if sum(min(len(o.encode()) for o in opts) for opts in options) >= 6:
            continue
        for combo in itertools.product(*options):
            key = "".join(combo)
            if len(key.encode()) >= 6 or key in rules:
                continue
            target = unicodedata.normalize("NFKC", key)
            if target != "".join(single_codepoint.get(c, c) for c in key):
                rules[key] = target
    return rules


def build_precompiled_charsmap(rules: dict[str, str]) -> bytes:
    """Serialise normalisation rules as a SentencePiece precompiled charsmap.

    The layout is the one ``tokenizers.normalizers.Precompiled`` reads: u32 trie size in bytes, a
    darts-clone double-array trie over the UTF-8 keys whose leaf values are offsets into the
    following blob of NUL-terminated replacement strings.
    """
    trie, blob = _byte_trie(rules)
    trie_bytes = _DoubleArray().encode(trie)
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(blob)


def _byte_trie(rules: dict[str, str]) -> tuple[dict, bytearray]:
    """A nested-dict trie over the rules' UTF-8 keys (byte -> child; ``None`` -> the key's value, an
    offset into the blob) and the blob of NUL-terminated replacements, each stored once."""
    blob = bytearray()
    value_offset: dict[str, int] = {}
    trie: dict = {}
    for key in sorted(rules):
        raw_key = key.encode()
        if not raw_key or 0 in raw_key:
            raise ValueError(f"normalisation key {key!r} cannot be stored in a charsmap")
        target = rules[key]
        if target not in value_offset:
            value_offset[target] = len(blob)
            blob += target.encode() + b"\0"
        node = trie
        for byte in raw_key:
            node = node.setdefault(byte, {})
        node[None] = value_offset[target]  # None marks a key's end: the label-0 leaf in darts
    return trie, blob


class _DoubleArray:
    """A darts-clone double array under construction: its units and, per slot, whether the slot is
    taken (by a child unit or a leaf) and whether it is some node's base."""

    def __init__(self) -> None:
        self.units: list[int] = [0] * 4096
        self.used = bytearray(4096)
        self.is_base = bytearray(4096)
        self.used[0] = 1  # the root

    def grow(self, size: int) -> None:
        while len(self.units) < size:
            self.units.extend([0] * len(self.units))
            self.used.extend(bytes(len(self.used)))
            self.is_base.extend(bytes(len(self.is_base)))

    def find_base(self, labels: list[int], first_free: int) -> int:
        """Walk the free slots as homes for the smallest label; a base must leave every other child
        slot free and be unique, so one node's children are never found under another node."""
        probe = first_free
        while True:
            base = probe ^ labels[0]
            self.grow((max(base, probe) | 0xFF) + 1)
            if not self.is_base[base] and not any(self.used[base ^ label] for label in labels[1:]):
                return base
            probe = self.used.find(0, probe + 1)
            if probe < 0:
                probe = len(self.used)

    def encode(self, trie: dict) -> bytes:
        """The units of ``trie`` placed depth-first from the root at slot 0, as little-endian u32s."""
        units, used = self.units, self.used  # grow() extends these in place
        first_free = 1
        queue: list[tuple[dict, int]] = [(trie, 0)]
        while queue:
            node, pos = queue.pop()
            labels = sorted(0 if k is None else k for k in node)
            first_free = used.find(0, first_free)
            base = self.find_base(labels, first_free)
            self.is_base[base] = 1
            offset = pos ^ base
            if offset >= 1 << 21:
                raise ValueError("normalisation trie too large for the darts offset encoding")
            unit = units[pos] | offset << 10
            for key, child in node.items():
                label = 0 if key is None else key
                used[base ^ label] = 1
                if key is None:
                    unit |= 1 << 8  # has_leaf
                    units[base] = (1 << 31) | child
                else:
                    units[base ^ label] = label
                    queue.append((child, base ^ label))
            units[pos] = unit
        # Lookups probe base ^ label for any byte label, so every touched 256-unit block must exist.
        size = (used.rfind(1) | 0xFF) + 1
        return np.asarray(units[:size], dtype="<u4").tobytes()


def build_tokenizer(e5: E5File):  # -> tokenizers.Tokenizer (imported lazily: it is a heavy import)
    """The XLM-R tokenizer: Unigram over the file's pieces and scores, ``nmt_nfkc`` normalisation,
    Metaspace pre-tokenisation and the ``<s> A </s></s> B </s>`` template."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    ids = e5.special_ids
    vocab = list(zip(e5.pieces, e5.scores.astype(np.float64).tolist(), strict=True))
    tokenizer = Tokenizer(Unigram(vocab, unk_id=ids["unk"], byte_fallback=False))
    charsmap = build_precompiled_charsmap(nmt_nfkc_rules(e5.norm_map))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_META, prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement=_META, prepend_scheme="always", split=True)
    bos, eos = _SPECIAL_PIECES["bos"], _SPECIAL_PIECES["eos"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, ids["bos"]), (eos, ids["eos"])],
    )
    tokenizer.add_special_tokens(
        [
            AddedToken(e5.pieces[ids[role]], special=True, normalized=False)
            for role in ("bos", "pad", "eos", "unk")
        ]
        + [AddedToken(_MASK_PIECE, special=True, normalized=False, lstrip=True)]
    )
    return tokenizer


def _tokenizer_configs(special_ids: dict[str, int]) -> tuple[dict, dict]:
    def token(content: str, lstrip: bool = False) -> dict[str, object]:
        return {
            "content": content,
            "lstrip": lstrip,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }

    names = {**_SPECIAL_PIECES, "mask": _MASK_PIECE}
    added = {
        str(special_ids[role]): token(names[role], role == "mask")
        for role in ("bos", "pad", "eos", "unk", "mask")
    }
    special_map = {
        "bos_token": names["bos"],
        "cls_token": names["bos"],
        "eos_token": names["eos"],
        "sep_token": names["eos"],
        "unk_token": names["unk"],
        "pad_token": names["pad"],
        "mask_token": names["mask"],
    }
    config = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": 512,
        "add_prefix_space": True,
        "clean_up_tokenization_spaces": True,
        "added_tokens_decoder": added,
        **special_map,
    }
    return config, special_map
