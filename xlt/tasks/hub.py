"""Reading a split from the Hugging Face hub: which revision, where from (a local mirror in tests),
which commit was actually read, and span-QA answers realigned where the hub's builder stripped the
context.

The production call is always ``datasets.load_dataset(repo, config, split=..., revision=...)``. A
*mirror* (``data.hub_mirror``; conf/data/default.yaml fills it from ``$XLT_HUB_MIRROR``, read
nowhere else, so ``data.hub_mirror=null`` wins over the variable) is a directory holding, per repo, a local
dataset laid out as the hub repo is (parquet files per config and split, a README whose YAML names
the configs): ``<mirror>/<owner>/<name>`` for the repo's branch or pinned commit, and
``<mirror>/<owner>/<name>@<ref>`` for a named ref such as ``refs/convert/parquet``. The same
``datasets.load_dataset`` reads it (path = that directory, config and split as on the hub), so the
packaged parquet builder, features, ClassLabels and split names are the library's own.

Every read is recorded (:func:`hub_reads`): repo, config, split, the revision asked for, the commit
resolved (the hub's cache directory names it; a mirror's ``COMMIT`` file stands in for it, recorded
as ``mirror:<its text>`` so that it is never taken for a hub commit), rows
realigned and rows filtered by language. Runs write these to ``state.json``, their result rows and W&B.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HUB_MIRROR_ENV = "XLT_HUB_MIRROR"  # read by conf/data/default.yaml only (data.hub_mirror)
PARQUET_EXPORT = "refs/convert/parquet"  # the hub's parquet conversion of a repo
MIRROR_COMMIT_FILE = "COMMIT"  # a mirror's stand-in for the hub commit it copies
MIRROR_PREFIX = "mirror:"  # a recorded commit read from a mirror, never a hub commit
_COMMIT = re.compile(r"(?<![0-9a-f])([0-9a-f]{40})(?![0-9a-f])")

_settings: dict[str, Any] = {"mirror": None, "revisions": {}}
_reads: dict[str, dict[str, Any]] = {}


def configure(
    mirror: str | os.PathLike[str] | None = None, revisions: Mapping[str, str] | None = None
) -> None:
    """Set the run's ``data.hub_mirror`` and ``data.hub_revisions`` (repo -> revision to pin)."""
    _settings["mirror"] = str(mirror) if mirror else None
    _settings["revisions"] = dict(revisions or {})
    _reads.clear()  # a new run (or test) starts: only what it reads is recorded


def configure_from(data: Any, pinned: Mapping[str, str] | None = None) -> None:
    """:func:`configure` from a config's ``data`` section (every entry point that reads task data
    calls it: the run session, ``python -m xlt.audit``); ``pinned`` (a relaunch's commits) under the
    explicit ``data.hub_revisions``."""
    configure(data.get("hub_mirror"), {**(pinned or {}), **(data.get("hub_revisions") or {})})


def is_commit(revision: str | None) -> bool:
    return bool(revision) and re.fullmatch(r"[0-9a-f]{40}", str(revision)) is not None


def revision_for(repo: str, default: str | None) -> str | None:
    """The revision to read ``repo`` at: ``data.hub_revisions[repo]``, else the location's own
    (``HubFile.revision``), else None (the repo's default branch; the commit read is recorded)."""
    return _settings["revisions"].get(repo) or default


def mirror_dir(repo: str, revision: str | None) -> Path | None:
    """The mirror directory standing in for ``repo`` at ``revision``; None when no mirror is set (read
    the hub); FileNotFoundError when a mirror is set but lacks the repo."""
    root = _settings["mirror"]
    if not root:
        return None
    named_ref = revision if revision and not is_commit(revision) and revision != "main" else None
    directory = Path(root).expanduser() / (f"{repo}@{named_ref}" if named_ref else repo)
    if not directory.is_dir():  # a mirror stands in for the hub: never fall through to the network
        raise FileNotFoundError(f"not in the hub mirror {root} (no directory {directory})")
    return directory


def resolved_commit(ds: Any, mirror: Path | None) -> str:
    """The commit the rows came from: the hub cache directory of a hub read names it
    (``.../<config>/0.0.0/<commit>/``); a mirror's read is ``mirror:`` + its ``COMMIT`` file's text
    (``mirror:`` alone if none): a mirror is not the hub, and its reads are never pinned."""
    if mirror is not None:
        marker = mirror / MIRROR_COMMIT_FILE
        return MIRROR_PREFIX + (marker.read_text().strip() if marker.is_file() else "")
    for cache in getattr(ds, "cache_files", None) or []:
        found = _COMMIT.findall(str(cache.get("filename", "")))
        if found:
            return found[-1]
    return ""


def pin_problem(revision: str | None, commit: str) -> str | None:
    """Why rows read for a full-commit pin are not that commit's, or None. ``datasets`` drops the
    revision when it falls back to its newest cached copy (offline, or on a hub error), and a
    mirror holds one copy whatever the pin: the resolved commit must be the pinned one."""
    if not is_commit(revision):
        return None
    read = commit.removeprefix(MIRROR_PREFIX)
    if read == revision:
        return None
    if not is_commit(read):
        shown = commit or "no commit in the rows' cache path"
        return f"pinned to commit {revision} but the commit read cannot be resolved ({shown}): refusing rows of an unknown commit"
    return (
        f"pinned to commit {revision} but read {read} (offline or on a hub error datasets falls back to its "
        "newest cached copy; a mirror holds one copy): fetch the pinned commit, or pin the one read"
    )


def pins(reads: Mapping[str, Mapping[str, Any]], mirror: str | None = None) -> dict[str, str]:
    """repo -> the commit a run read it at (from its state.json ``hub_reads``), to read the same
    rows on a relaunch (a parquet export's commit too: it is a commit of the same repo). Nothing is
    pinned when reading a mirror (it has no commits)."""
    if mirror:
        return {}
    return {
        str(info["repo"]): str(info["commit"])
        for info in reads.values()
        if is_commit(info.get("commit")) and not info.get("mirror")
    }


def record_read(origin: str, **info: Any) -> None:
    _reads[origin] = info


def hub_reads() -> dict[str, dict[str, Any]]:
    """Every hub split read by this process: origin -> repo, config, split, revision, commit, counts."""
    return {key: dict(value) for key, value in _reads.items()}


def data_commits(reads: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, str]:
    """``repo[/config]`` -> the commit read (what result rows carry), of ``reads`` (state.json's
    ``hub_reads``) or of this process's reads."""
    commits: dict[str, str] = {}
    for info in (_reads if reads is None else reads).values():
        key = info["repo"] + (f"/{info['config']}" if info.get("config") else "")
        commits[key] = info.get("commit", "")
    return commits


def commits_label(reads: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The commits read, as one result-row field: ``repo[/config]@commit`` sorted, ``;``-joined."""
    return ";".join(f"{key}@{commit or '?'}" for key, commit in sorted(data_commits(reads).items()))


def realign_answer(context: str, text: str, start: int) -> int | None:
    """Where ``text`` is in ``context``: ``start`` when it is there, else the nearest occurrence at
    or before ``start``, else the nearest after it (the XTREME/TyDiQA builders strip the context and
    the answer text but keep the original ``answer_start``: stripping only moves text towards the
    front, so the answer is at or before its old offset); None when the text occurs nowhere in the
    context."""
    if start >= 0 and context[start : start + len(text)] == text:
        return start
    before = context.rfind(text, 0, max(start, 0) + len(text))
    if before != -1:
        return before
    after = context.find(text, max(start, 0))
    return after if after != -1 else None
