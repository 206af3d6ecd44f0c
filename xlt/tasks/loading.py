"""Read a task's examples for one split and language, from the raw files or from the hub."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from xlt import PROJECT_ROOT
from xlt.tasks.registry import FORMATS, HUB_MAPPERS
from xlt.tasks.spec import DataError, Example, TaskSpec

log = logging.getLogger(__name__)

SOURCES = ("auto", "local", "hub")


class MissingDataError(DataError):
    """No file (or hub split) holds this task/split/language."""


def default_data_dir() -> Path | None:
    """``$XLT_DATA_DIR``, else ``../shared/data`` beside the project root when it exists."""
    env = os.environ.get("XLT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    shared = PROJECT_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def resolve_source(source: str, data_dir: str | os.PathLike[str] | None) -> tuple[str, Path | None]:
    """Turn the configured ``data.source``/``data.dir`` into ("local", dir) or ("hub", None)."""
    if source not in SOURCES:
        raise ValueError(f"data.source={source!r}: expected one of {', '.join(SOURCES)}")
    directory = Path(data_dir).expanduser() if data_dir else default_data_dir()
    if source == "hub":
        return "hub", None
    if directory is None or not directory.is_dir():
        if source == "local":
            shown = directory or "(unset; set XLT_DATA_DIR or data.dir)"
            raise FileNotFoundError(
                f"data.dir {shown}: not a directory (data.source=local needs the raw files)"
            )
        return "hub", None
    return "local", directory


@dataclass(frozen=True)
class Loaded:
    examples: list[Example]
    origin: str  # the file or hub id the examples came from
    dropped: int = 0  # rows the task itself defines as unusable (e.g. SNLI's no-consensus label)
    fingerprint: str = ""  # changes when the underlying data changes: keys the feature cache


def split_parts(split: str) -> list[str]:
    """``"dev_r1+dev_r2"`` -> ``["dev_r1", "dev_r2"]``: a split may be a union of named splits."""
    return [part for part in split.split("+") if part]


def load_split(
    spec: TaskSpec,
    split: str,
    lang: str,
    source: str,
    data_dir: Path | None,
    limit: int | None = None,
) -> Loaded:
    """Examples of ``spec``'s ``split`` in ``lang``; raises MissingDataError (one line) when absent."""
    examples: list[Example] = []
    origins, fingerprints = [], []
    dropped = 0
    for part in split_parts(split):
        loaded = _load_local(spec, part, lang, data_dir) if source == "local" else _load_hub(spec, part, lang)
        examples.extend(loaded.examples)
        origins.append(loaded.origin)
        fingerprints.append(loaded.fingerprint)
        dropped += loaded.dropped
    if limit is not None:
        examples = examples[:limit]
    return Loaded(examples, " + ".join(origins), dropped, "|".join(fingerprints) + f"|limit={limit}")


def _load_local(spec: TaskSpec, split: str, lang: str, data_dir: Path | None) -> Loaded:
    assert data_dir is not None
    candidates = spec.raw.get(split)
    if not candidates:
        raise MissingDataError(
            f"{spec.name}: no split {split!r} (splits with raw files: {', '.join(sorted(spec.raw)) or 'none'})"
        )
    tried = []
    for raw in candidates:
        path = raw.path(data_dir, lang, spec.code(lang))
        paths = _matching_files(data_dir, path)
        if paths:
            reader = FORMATS[raw.format]
            rows = [row for p in paths for row in reader(p, lang)]
            examples = [row for row in rows if not row.get("_drop")]
            for ex in examples:
                _check_labels(spec, ex, path)
            if not examples:
                # A file holding several languages may lack this one: report it like a missing file.
                raise MissingDataError(f"{path}: no examples for task {spec.name} ({lang}, {split})")
            stats = [(p, p.stat()) for p in paths]
            fingerprint = "|".join(f"{p}:{st.st_size}:{st.st_mtime_ns}" for p, st in stats)
            return Loaded(examples, " + ".join(str(p) for p in paths), len(rows) - len(examples), fingerprint)
        tried.append(str(path.relative_to(data_dir)))
    raise MissingDataError(
        f"{spec.name}/{split}/{lang}: no file under {data_dir} (looked for {', '.join(tried)})"
    )


def _matching_files(data_dir: Path, path: Path) -> list[Path]:
    """``[path]`` if it is a file; for a glob pattern (``UD_*/en_*-ud-train.conllu``) every matching
    file, pooled in sorted file-name order (XTREME's order for UD treebanks); else ``[]``."""
    if path.is_file():
        return [path]
    relative = str(path.relative_to(data_dir))
    if not any(c in relative for c in "*?["):
        return []
    return sorted((p for p in data_dir.glob(relative) if p.is_file()), key=lambda p: (p.name, str(p)))


def _check_labels(spec: TaskSpec, ex: Example, path: Path) -> None:
    label = ex.get("label")
    if isinstance(label, int) and spec.label_names and not 0 <= label < spec.num_labels:
        raise DataError(
            f"{path}: label {label} out of range for {spec.name} (expected 0..{spec.num_labels - 1})"
        )


def _load_hub(spec: TaskSpec, split: str, lang: str) -> Loaded:
    if spec.hub_unusable:
        raise MissingDataError(f"{spec.name}/{split}/{lang}: {spec.hub_unusable}")
    hub = spec.hub.get(split)
    if hub is None:
        raise MissingDataError(f"{spec.name}: split {split!r} is not on the hub for this task")
    import datasets

    name = hub.name.format(lang=lang, lang3=spec.code(lang)) if hub.name else None
    origin = f"hub:{hub.path}" + (f"/{name}" if name else "") + f"[{hub.split}]"
    try:
        ds = datasets.load_dataset(hub.path, name, split=hub.split)
    except Exception as err:  # the hub raises many types; the user needs one line saying which dataset
        raise MissingDataError(f"{origin}: could not load ({type(err).__name__}: {err})") from err
    if hub.lang_filter:
        ds = ds.filter(lambda row: row[hub.lang_filter] == lang)
    mapper = HUB_MAPPERS[hub.mapper]
    examples = []
    dropped = 0
    for i, row in enumerate(ds):
        ex = mapper(row, lang)
        if ex is None:
            dropped += 1
            continue
        _check_labels(spec, ex, Path(f"{origin} row {i}"))
        examples.append(ex)
    return Loaded(examples, origin, dropped, f"{origin}:{ds._fingerprint}")


def local_files(spec: TaskSpec, split: str, lang: str, data_dir: Path | None) -> list[Path] | None:
    """The raw files :func:`load_split` would read for ``split`` (every part of a '+'-joined one) from
    ``data_dir``, found without reading them; None when a part has none (load_split then says why)."""
    if data_dir is None:
        return None
    files: list[Path] = []
    for part in split_parts(split):
        for raw in spec.raw.get(part) or ():
            paths = _matching_files(data_dir, raw.path(data_dir, lang, spec.code(lang)))
            if paths:
                files.extend(paths)
                break
        else:
            return None
    return files
