"""Read a task's examples for one split and language, from the raw files or from the hub."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlt import PROJECT_ROOT
from xlt.tasks import hub as hubio
from xlt.tasks.hub_rows import log_hub_read, map_hub_rows, one_line
from xlt.tasks.registry import FORMATS, HUB_MAPPERS, all_tasks, flatten_mixture, get_mixture, get_task
from xlt.tasks.spec import DataError, Example, HubFile, RawFile, TaskSpec

log = logging.getLogger(__name__)

SOURCES = ("auto", "local", "hub")
# Formats whose files hold several languages (or CCGbank sections) and yield only the asked one: a
# file without it is a missing split for that language, not a broken file.
SELECTING_FORMATS = frozenset(
    {"xnli_official_tsv", "tydiqa_goldp_json", "ccgbank_auto_train", "ccgbank_auto_dev", "ccgbank_auto_test"}
)


class MissingDataError(DataError):
    """No file (or hub split) holds this task/split/language."""


def default_data_dir() -> Path | None:
    """``$XLT_DATA_DIR``, else ``../shared/data`` beside the project root when it exists."""
    env = os.environ.get("XLT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    shared = PROJECT_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def configured_data_dir_error(source: str, data_dir: str | os.PathLike[str] | None) -> str | None:
    """Why a data directory the user named (``data.dir`` or ``$XLT_DATA_DIR``) cannot be used, or None.

    A directory someone named but that does not exist is a mistake (a typo, an unmounted disk), not a
    reason to fall back to the hub silently; only the unset default falls back."""
    if source == "hub":
        return None
    named = str(data_dir) if data_dir else os.environ.get("XLT_DATA_DIR")
    if not named:
        return None
    directory = Path(named).expanduser()
    if directory.is_dir():
        return None
    from_env = not data_dir or str(data_dir) == os.environ.get("XLT_DATA_DIR")  # conf/data reads the env
    option = "XLT_DATA_DIR" if from_env else "data.dir"
    what = "not a directory" if directory.exists() else "no such directory"
    return f"{option}={named}: {what} (the raw task files are read from there; data.source=hub uses the hub)"


def resolve_source(source: str, data_dir: str | os.PathLike[str] | None) -> tuple[str, Path | None]:
    """Turn the configured ``data.source``/``data.dir`` into ("local", dir) or ("hub", None)."""
    if source not in SOURCES:
        raise ValueError(f"data.source={source!r}: expected one of {', '.join(SOURCES)}")
    directory = Path(data_dir).expanduser() if data_dir else default_data_dir()
    if source == "hub":
        return "hub", None
    problem = configured_data_dir_error(source, data_dir)
    if problem:
        raise DataError(problem)
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


def locate_split(spec: TaskSpec, split: str, lang: str, data_dir: Path) -> list[Path]:
    """The files that hold ``split`` in ``lang`` under ``data_dir`` (first layout found), without
    reading them; MissingDataError (one line, naming what was looked for) when there are none."""
    for part in split_parts(split):
        _first_layout(spec, part, lang, data_dir)
    return [p for part in split_parts(split) for p in _first_layout(spec, part, lang, data_dir)[1]]


def _first_layout(spec: TaskSpec, split: str, lang: str, data_dir: Path) -> tuple[RawFile, list[Path], Path]:
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
            return raw, paths, path
        tried.append(str(path.relative_to(data_dir)))
    raise MissingDataError(
        f"{spec.name}/{split}/{lang}: no file under {data_dir} (looked for {', '.join(tried)})"
    )


def _load_local(spec: TaskSpec, split: str, lang: str, data_dir: Path | None) -> Loaded:
    assert data_dir is not None
    raw, paths, path = _first_layout(spec, split, lang, data_dir)
    reader = FORMATS[raw.format]
    for p in paths:
        if p.stat().st_size == 0:
            raise DataError(f"{p}: empty file (0 bytes; an interrupted download or copy?)")
    rows = [row for p in paths for row in reader(p, lang)]
    examples = [row for row in rows if not row.get("_drop")]
    for ex in examples:
        _check_labels(spec, ex, path)
    if not examples:
        if raw.format in SELECTING_FORMATS:
            # A file holding several languages (or sections) may lack this one: report it like a
            # missing file.
            raise MissingDataError(f"{path}: no examples for task {spec.name} ({lang}, {split})")
        what = f"all {len(rows)} rows unlabelled" if rows else "no records"
        raise DataError(f"{' + '.join(map(str, paths))}: {what} ({spec.name} {lang} {split})")
    stats = [(p, p.stat()) for p in paths]
    fingerprint = "|".join(f"{p}:{st.st_size}:{st.st_mtime_ns}" for p, st in stats)
    return Loaded(examples, " + ".join(str(p) for p in paths), len(rows) - len(examples), fingerprint)


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

    name = hub.name.format(lang=lang, lang3=spec.code(lang)) if hub.name else None
    revision = hubio.revision_for(hub.path, hub.revision)
    at = f"@{revision}" if revision else ""
    origin = f"hub:{hub.path}{at}" + (f"/{name}" if name else "") + f"[{hub.split}]"
    ds, mirror = _open_hub_dataset(hub, name, revision, origin)
    try:
        if hub.lang_filter:
            ds = ds.filter(lambda row: row[hub.lang_filter] == lang)
        rows = iter(ds)
    except Exception as err:  # a missing column, a broken file: one line naming the dataset
        raise DataError(f"{origin}: could not read its rows ({type(err).__name__}: {one_line(err)})") from err
    examples, dropped, realigned, other_language = map_hub_rows(
        spec, rows, HUB_MAPPERS[hub.mapper], lang, origin, _check_labels
    )
    commit = hubio.resolved_commit(ds, mirror)
    problem = hubio.pin_problem(revision, commit)
    if problem:
        raise DataError(f"{origin}: {problem}")
    hubio.record_read(
        origin,
        repo=hub.path,
        config=name,
        split=hub.split,
        revision=revision or "",
        commit=commit,
        rows=len(examples),
        realigned=realigned,
        other_language=other_language,
        dropped=dropped,
        mirror=str(mirror) if mirror else "",
    )
    log_hub_read(origin, lang, len(examples), realigned, other_language)
    return Loaded(examples, origin, dropped, f"{origin}:{commit}:{ds._fingerprint}")


def _open_hub_dataset(hub: HubFile, name: str | None, revision: str | None, origin: str) -> tuple[Any, Any]:
    """The split's dataset (from the local mirror when there is one) and that mirror; a dataset that
    cannot load is a MissingDataError in one line naming it."""
    import datasets

    mirror = None
    try:
        mirror = hubio.mirror_dir(hub.path, revision)
        if mirror is not None:  # a local copy laid out as the repo (tests): read by the same builder
            ds = datasets.load_dataset(
                str(mirror), name, split=hub.split, revision=revision
            )  # local: ignored
        else:
            ds = datasets.load_dataset(hub.path, name, split=hub.split, revision=revision)
    except Exception as err:  # the hub raises many types; the user needs one line saying which dataset
        message = one_line(err)
        if "scripts are no longer supported" in message and revision != hubio.PARQUET_EXPORT:
            message += f"; read the hub's parquet export: 'data.hub_revisions={{{hub.path}: {hubio.PARQUET_EXPORT}}}'"
        elif revision == hubio.PARQUET_EXPORT:
            message += (
                "; without the hub's parquet export: the original files under data.dir with data.source=local"
            )
        raise MissingDataError(f"{origin}: could not load ({type(err).__name__}: {message})") from err
    return ds, mirror


def member_missing(mixture: str, task: str, err: Exception | str) -> str:
    """The one line that stops a mixture whose member cannot load (it would silently train fewer tasks)."""
    return (
        f"intermediate {mixture}: member {task} cannot load ({err}); to train {mixture} without it, "
        f"name it: 'intermediate.skip_members=[{task}]'"
    )


@dataclass(frozen=True)
class NeededFiles:
    """The English splits a run with local files cannot do without (:func:`needed_files`)."""

    target: str
    needed: tuple[tuple[str, str, str], ...]  # (task, split, why)
    members: tuple[tuple[str, str], ...]  # (task, training split) of each mixture member it may not skip
    mixture: str | None


def needed_files(cfg: Any) -> NeededFiles:
    """What :func:`check_needed` looks for, from a validated config (no file is read here)."""
    needed = []  # (task, split, why)
    target = get_task(cfg.target.name)
    if target.trainable:
        if cfg.target.train_task and cfg.target.train_split:
            needed.append((cfg.target.train_task, cfg.target.train_split, "target.train_split"))
        if cfg.target.dev_split or target.dev_split:
            needed.append((target.name, cfg.target.dev_split or target.dev_split, "target.dev_split"))
    if "en" in target.languages and "en" in (cfg.target.languages or target.languages):
        needed.append((target.name, target.test_split, "the English test: the gap is measured from it"))
    stage = cfg.intermediate
    mixture = get_mixture(stage.name) if stage is not None else None
    members = []
    if mixture is not None:  # each member's English training set, unless the config may skip it
        for task in flatten_mixture(mixture).tasks:
            if (stage.only is not None and task not in stage.only) or task in (stage.skip_members or []):
                continue
            member = stage.members.get(task)
            members.append((task, member.train_split if member else "train"))
    if stage is not None and mixture is None:
        spec = get_task(stage.name)
        if stage.train_split:
            needed.append((spec.name, stage.train_split, "intermediate.train_split"))
        if stage.dev_split or spec.dev_split:
            needed.append((spec.name, stage.dev_split or spec.dev_split, "intermediate.dev_split"))
    return NeededFiles(target.name, tuple(needed), tuple(members), mixture.name if mixture else None)


def check_local_files(cfg: Any) -> None:
    """Before a run writes anything: with local files, the English splits it cannot do without must
    be there (found, not yet read): the target's training and dev sets and its English test (the gap
    is measured from it), a single intermediate task's training and dev sets, each mixture member's
    training set (unless ``intermediate.skip_members`` names it). Other test languages may be absent
    (skipped, one line each). With the hub
    nothing is checked here (a missing English test is an error when it is loaded)."""
    source, data_dir = resolve_source(cfg.data.source, cfg.data.dir)
    check_needed(needed_files(cfg), source, data_dir)


def check_needed(files: NeededFiles, source: str, data_dir: Path | None) -> None:
    """:func:`check_local_files` of a run's :class:`NeededFiles` with its resolved data source."""
    if source != "local" or data_dir is None:
        return
    for task, split in files.members:
        try:
            locate_split(get_task(task), split, "en", data_dir)
        except MissingDataError as err:
            raise DataError(member_missing(str(files.mixture), task, err)) from None
    for task, split, why in files.needed:
        try:
            locate_split(get_task(task), split, "en", data_dir)
        except MissingDataError as err:
            hint = ""
            if why == "target.train_split":
                found = english_training_alternatives(get_task(files.target), data_dir)
                if found:
                    hint = "; found here: " + " or ".join(
                        f"target.train_task={task} target.train_split={split}" for task, split in found[:2]
                    )
            raise DataError(f"{err} ({why}{hint})") from None


def english_training_alternatives(target: Any, data_dir: Path) -> list[tuple[str, str]]:
    """(task, split) pairs present under ``data_dir`` that can train ``target``'s head: English tasks
    with the same head kind and label names (e.g. SNLI or ANLI for XNLI), train splits first."""
    found = []
    for split in ("train", "dev"):
        for spec in all_tasks().values():
            if (
                spec.name == target.name
                or spec.head != target.head
                or spec.label_names != target.label_names
                or "en" not in spec.languages
                or split not in spec.raw
            ):
                continue
            try:
                locate_split(spec, split, "en", data_dir)
            except (MissingDataError, DataError):
                continue
            found.append((spec.name, split))
    return found


def local_files(spec: TaskSpec, split: str, lang: str, data_dir: Path | None) -> list[Path] | None:
    """The raw files :func:`load_split` would read for ``split`` (every part of a '+'-joined one) from
    ``data_dir``, found without reading them; None when a part has none (load_split then says why)."""
    if data_dir is None:
        return None
    try:
        return locate_split(spec, split, lang, data_dir)
    except MissingDataError:
        return None
