"""Featurisers per head kind (tokenisation through ``datasets.map``) and the tokenised-feature cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import PreTrainedTokenizerBase

from xlt.modeling.families import LABEL_PIECE, WORD_PREFIX_SPACE
from xlt.results.rows import apply_umask
from xlt.tasks.loading import Loaded, load_split, local_files
from xlt.tasks.spec import Example, TaskSpec
from xlt.utils.registry import Registry

log = logging.getLogger(__name__)

Featurizer = Callable[[PreTrainedTokenizerBase, dict[str, list[Any]], int], dict[str, list[Any]]]
# Head kind -> featurizer; the modules of the other kinds (features_*.py) register theirs when
# xlt/data/__init__.py imports them.
FEATURIZERS: Registry[Featurizer] = Registry("featurizer")
register_featurizer = FEATURIZERS.register
# Bump when a featuriser's output changes, so cached features are rebuilt.
FEATURE_VERSION = 1
# Bump when what load_split_cached stores changes (2: JSON with a checked header, was a pickle).
EXAMPLES_VERSION = 2
# The first line of an examples cache entry; the payload after it is JSON (never a pickle: a cache
# directory shared by a group must not run code written into it by anyone who can write there).
EXAMPLES_MAGIC = "xlt-examples"


@register_featurizer("classification")
def featurize_classification(
    tokenizer: PreTrainedTokenizerBase, batch: dict[str, list[Any]], max_len: int
) -> dict[str, list[Any]]:
    pair = batch.get("text_b")
    enc = tokenizer(batch["text_a"], pair, truncation=True, max_length=max_len)
    out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": batch["label"]}
    return out


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Identity of a tokenizer's behaviour (its full serialised definition), for cache keys."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(tokenizer.get_vocab())
    if getattr(tokenizer, WORD_PREFIX_SPACE, False):  # words tokenised as " word" (features_tagging)
        text += "|word-prefix-space-where-spaced"
    if getattr(tokenizer, LABEL_PIECE, "first") != "first":
        text += f"|label-{getattr(tokenizer, LABEL_PIECE)}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def featurize(
    examples: Sequence[Example],
    kind: str,
    tokenizer: PreTrainedTokenizerBase,
    max_len: int,
    cache_dir: Path | None,
    key: dict[str, Any],
    desc: str = "",
) -> datasets.Dataset:
    """Tokenised features with ``length`` and ``example_idx`` columns, cached on disk under ``key``.

    A second call with the same key (same data fingerprint, tokenizer, length, featuriser version)
    loads the cached Arrow files instead of tokenising again.
    """
    fn = _featurizer(kind)
    full_key = {**key, "kind": kind, "max_len": max_len, "version": FEATURE_VERSION}
    digest = hashlib.sha1(json.dumps(full_key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    target = cache_dir / "features" / digest if cache_dir is not None else None
    if target is not None and (cached := _read_cache_entry(target)) is not None:
        return cached
    features = _tokenise(examples, fn, tokenizer, max_len, desc, digest)
    if target is None:
        return features
    _write_cache_entry(features, target, full_key)
    return datasets.load_from_disk(str(target))


def _featurizer(kind: str) -> Featurizer:
    try:
        return FEATURIZERS[kind]
    except KeyError:
        raise ValueError(
            f"no featurizer for head kind {kind!r} (registered: {', '.join(sorted(FEATURIZERS))})"
        ) from None


def _read_cache_entry(target: Path) -> datasets.Dataset | None:
    """The features cached in ``target``, or None when there are none; a damaged entry is removed."""
    if not (target / "dataset_info.json").is_file():
        return None
    problem = features_problem(target)
    if problem is None:
        try:
            return datasets.load_from_disk(str(target))
        except Exception as err:  # noqa: BLE001 - any unreadable Arrow file: rebuild it
            problem = f"unreadable: {type(err).__name__}"
    log.warning("feature cache entry %s is damaged (%s); rebuilding it", target, problem)
    shutil.rmtree(target, ignore_errors=True)
    return None


def _tokenise(
    examples: Sequence[Example],
    fn: Featurizer,
    tokenizer: PreTrainedTokenizerBase,
    max_len: int,
    desc: str,
    digest: str,
) -> datasets.Dataset:
    """The examples (without their ``_``-prefixed keys) through ``fn`` in batches of ``datasets.map``."""
    raw = datasets.Dataset.from_list(
        [{k: v for k, v in ex.items() if not k.startswith("_")} for ex in examples]
    )
    raw = raw.add_column("example_idx", list(range(len(raw))))

    def apply(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out = fn(tokenizer, batch, max_len)
        if "length" not in out:  # multiple choice sets its own (the longest choice), not the choice count
            out["length"] = [len(ids) for ids in out["input_ids"]]
        if "example_idx" not in out:
            out["example_idx"] = batch["example_idx"]
        return out

    # new_fingerprint: our key already identifies the result; without it datasets pickles the
    # tokenizer to hash the function, which takes ~20 s per call for XLM-R's vocabulary.
    return raw.map(
        apply,
        batched=True,
        remove_columns=raw.column_names,
        desc=f"tokenising {desc}".strip(),
        new_fingerprint=digest,
    )


def _write_cache_entry(features: datasets.Dataset, target: Path, full_key: dict[str, Any]) -> None:
    """Save ``features`` as the cache entry ``target`` with its :data:`KEY_FILE`, atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        apply_umask(tmp, directory=True)  # mkdtemp's 0700 would hide a shared cache from teammates
        features.save_to_disk(str(tmp))
        files = {p.name: [p.stat().st_size, _sha256(p)] for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / KEY_FILE).write_text(
            json.dumps({**full_key, "files": files}, sort_keys=True, default=str, indent=1)
        )
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process (a DDP rank) finished the same features first; theirs are identical.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


KEY_FILE = "xlt_key.json"  # a feature cache entry's key and the size and SHA-256 of each of its files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def features_problem(entry: Path) -> str | None:
    """Why a feature cache folder cannot be used (a file missing, truncated, edited), or None."""
    try:
        files = json.loads((entry / KEY_FILE).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return f"no readable {KEY_FILE}"
    if not isinstance(files, dict) or not files:
        return f"{KEY_FILE} lists no files"
    for name, recorded in files.items():
        path = entry / str(name)
        if not (isinstance(recorded, list) and len(recorded) == 2):
            return f"{KEY_FILE} has a bad entry for {name}"
        size, sha = recorded
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, expected {size}"
        if _sha256(path) != sha:
            return f"{name}'s SHA-256 does not match {KEY_FILE}"
    return None


def _code_fingerprint() -> str:
    """Hash of the task readers' source (xlt/tasks/*.py): a reader fix invalidates cached examples."""
    global _CODE_FINGERPRINT
    if _CODE_FINGERPRINT is None:
        digest = hashlib.sha1()
        for path in sorted((Path(__file__).resolve().parents[1] / "tasks").glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        _CODE_FINGERPRINT = digest.hexdigest()[:16]
    return _CODE_FINGERPRINT


_CODE_FINGERPRINT: str | None = None


def load_split_cached(
    spec: TaskSpec,
    split: str,
    lang: str,
    source: str,
    data_dir: Path | None,
    limit: int | None,
    cache_dir: Path | None,
) -> Loaded:
    """:func:`xlt.tasks.loading.load_split`, with the parsed examples of local files kept in
    ``cache_dir/examples`` under the files' paths, sizes and modification times and the readers'
    source hash. A repeated run then skips parsing (UD-POS English train: most of a warm start,
    see benchmarks/bench_pipeline.py). Hub data and runs without a cache directory read as before."""
    files = local_files(spec, split, lang, data_dir) if source == "local" and cache_dir is not None else None
    if not files:
        return load_split(spec, split, lang, source, data_dir, limit=limit)
    assert cache_dir is not None
    stats = [f"{p}:{st.st_size}:{st.st_mtime_ns}" for p, st in ((p, p.stat()) for p in files)]
    key = {
        "task": spec.name,
        "split": split,
        "lang": lang,
        "files": stats,
        "limit": limit,
        "readers": _code_fingerprint(),
        "version": EXAMPLES_VERSION,
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    target = cache_dir / "examples" / f"{digest}.json"
    if target.is_file():
        cached, problem = read_examples_entry(target)
        if cached is not None:
            return cached
        log.warning("feature cache entry %s is damaged (%s); rebuilding it", target, problem)
    loaded = load_split(spec, split, lang, source, data_dir, limit=limit)
    payload = _examples_payload(loaded)
    if payload is None:  # a value JSON cannot hold exactly (a tuple, bytes): read the files each time
        return loaded
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{digest}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        apply_umask(Path(tmp))
        os.replace(tmp, target)  # atomic: DDP ranks may write the same file at once
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return loaded


def _examples_payload(loaded: Loaded) -> bytes | None:
    """The bytes of an examples cache entry: a JSON header line (format, size and SHA-256 of the
    body) and the JSON body; None when the examples do not survive a JSON round trip unchanged."""
    data = {
        "examples": loaded.examples,
        "origin": loaded.origin,
        "dropped": loaded.dropped,
        "fingerprint": loaded.fingerprint,
    }
    try:
        body = json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError):
        return None
    if json.loads(body) != data:
        return None
    header = {
        "format": EXAMPLES_MAGIC,
        "version": EXAMPLES_VERSION,
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    return json.dumps(header).encode("utf-8") + b"\n" + body


def read_examples_entry(path: Path) -> tuple[Loaded | None, str]:
    """An examples cache entry read back as data only (JSON), or None and why it cannot be used:
    not our format, a body of another size (truncated, appended to) or another hash (edited)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        return None, f"unreadable: {err.strerror or err}"
    head, sep, body = raw.partition(b"\n")
    try:
        header = json.loads(head.decode("utf-8")) if sep else None
    except (UnicodeDecodeError, ValueError):
        header = None
    if not isinstance(header, dict) or header.get("format") != EXAMPLES_MAGIC:
        return None, "not an xlt examples file"
    if header.get("bytes") != len(body):
        return None, f"{len(body)} bytes, expected {header.get('bytes')}"
    if header.get("sha256") != hashlib.sha256(body).hexdigest():
        return None, "its SHA-256 does not match its header"
    try:
        data = json.loads(body.decode("utf-8"))
        loaded = Loaded(
            list(data["examples"]), str(data["origin"]), int(data["dropped"]), str(data["fingerprint"])
        )
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        return None, f"unreadable body ({type(err).__name__})"
    return loaded, ""


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    return depth


class Collator:
    """Dynamic padding of the last dimension to the longest sequence of the batch.

    Works for (batch, seq) fields and (batch, choices, seq) fields (multiple choice). ``input_ids``
    pads with the pad id, ``attention_mask`` with 0, every other sequence (labels, offsets) with -100.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key in rows[0]:
            values = [row[key] for row in rows]
            depth = _depth(values[0])
            if depth == 0:
                out[key] = torch.tensor(values)
                continue
            pad = {"input_ids": self.pad_id, "attention_mask": 0}.get(key, -100)
            seqs = values if depth == 1 else [s for v in values for s in v]
            width = max(len(s) for s in seqs)
            padded = [s + [pad] * (width - len(s)) for s in seqs]
            tensor = torch.tensor(padded)
            out[key] = tensor if depth == 1 else tensor.view(len(values), -1, width)
        return out
