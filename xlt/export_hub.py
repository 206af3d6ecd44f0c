"""What ``python -m xlt.export`` adds for the Hugging Face Hub: the model card's metadata (license,
base model, datasets, ``model-index`` with the run's test results), the note a debug run's card
carries, the file modes of an export, and ``--push-to-hub``.

The card's YAML front matter follows the Hub's model-card metadata: ``license`` is the base model's
(``model.license`` in ``conf/model/<name>.yaml``), ``base_model`` its hub id, ``datasets`` the hub
ids of the training data (the target's English training task and the intermediate task, their
``TaskSpec.hub`` train locations), and ``model-index`` one result per (test language, metric) of the
target stage, in percent as ``results.jsonl`` records them, its dataset the target's hub test
location. ``license: other`` (Qwen2.5-3B's research license) comes with ``license_name`` and
``license_link``, as the Hub asks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from xlt.results.rows import apply_umask
from xlt.tasks.registry import get_task

# The Hub's task types (pipeline tags) of xlt's head kinds.
HUB_TASK_TYPES = {
    "classification": "text-classification",
    "tagging": "token-classification",
    "span_qa": "question-answering",
    "multiple_choice": "multiple-choice",
}
_AGGREGATES = ("avg", "avg_non_en", "gap", "rel_gap")


def hub_metadata(
    cfg: DictConfig, target: Any, records: Iterable[dict[str, Any]], debug: str = ""
) -> dict[str, Any]:
    """The card's front matter as a dict (``yaml.safe_dump`` writes it); ``debug``: the run's debug mode."""
    rows = [r for r in records if r.get("stage") == "target"]
    languages = sorted({r["language"] for r in rows if r["language"] not in _AGGREGATES})
    meta: dict[str, Any] = {
        "library_name": "transformers",
        "tags": ["xlt", "zero-shot-cross-lingual-transfer"],
    }
    if cfg.model.get("license"):
        meta["license"] = str(cfg.model.license)
        if meta["license"] == "other":
            for key in ("license_name", "license_link"):
                if cfg.model.get(key):
                    meta[key] = str(cfg.model[key])
    if cfg.model.get("hub_id"):
        meta["base_model"] = str(cfg.model.hub_id)
    datasets = training_datasets(cfg, target)
    if datasets:
        meta["datasets"] = datasets
    if languages:
        meta["language"] = languages
    if debug:
        meta["tags"].append("debug-run")
    results = []
    task_type = HUB_TASK_TYPES.get(target.head, target.head)
    test_hub = getattr(target, "hub", {}).get(getattr(target, "test_split", "test"))
    dataset_type = test_hub.path if test_hub else target.name
    for lang in languages:
        metrics = [
            {
                "type": r["metric"],
                "value": round(float(r["value"]), 4),
                "name": f"{r['split']} {r['metric']} ({lang})",
            }
            for r in rows
            if r["language"] == lang and r["split"] == "test"
        ]
        if metrics:
            results.append(
                {
                    "task": {"type": task_type, "name": target.name},
                    "dataset": {
                        "name": f"{target.name} ({lang})",
                        "type": dataset_type,
                        "split": "test",
                        "config": _hub_config(test_hub, lang),
                    },
                    "metrics": metrics,
                }
            )
    if results:
        meta["model-index"] = [{"name": f"{cfg.model.name}-{target.name}", "results": results}]
    return meta


def training_datasets(cfg: DictConfig, target: Any) -> list[str]:
    """The hub ids of what the model was trained on: the target's English training task and the
    intermediate task (a mixture: its members), each where its train split lives on the hub."""
    names = [cfg.target.get("train_task") or getattr(target, "train_task", None) or target.name]
    if cfg.get("intermediate") is not None:
        names.append(cfg.intermediate.name)
    ids: list[str] = []
    for name in names:
        try:
            spec = get_task(name)
        except (KeyError, ValueError):  # a mixture (all9) is not one task: its members
            inter = cfg.intermediate
            members = list(inter.get("only") or inter.get("members") or [])
            ids.extend(_train_hub(get_task(m)) for m in members if m not in (inter.get("skip_members") or []))
            continue
        ids.append(_train_hub(spec))
    return sorted({i for i in ids if i})


def _train_hub(spec: Any) -> str:
    hub = getattr(spec, "hub", {})
    location = hub.get("train") or next(iter(hub.values()), None)
    return location.path if location else ""


def _hub_config(location: Any, lang: str) -> str:
    """The hub config of a test language (``PAN-X.de``; the language itself where none names it)."""
    name = getattr(location, "name", None)
    if name and "{lang}" in name and "{lang3}" not in name:
        return name.format(lang=lang)
    return lang


def front_matter(meta: dict[str, Any]) -> list[str]:
    """The ``---``-delimited YAML block a model card starts with."""
    return ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---"]


def debug_note(mode: str) -> str:
    """The card's warning for a debug or partial run ('' for a real run); ``mode`` is
    :func:`xlt.orchestration.plan_sections.debug_mode` of the run's config."""
    if not mode:
        return ""
    return (
        f"**Debug run ({mode}): not a trained model.** Its training and evaluation stopped after a few "
        "batches; the weights and the numbers below are not results."
    )


def tree_state(out_dir: Path) -> dict[Path, int]:
    """Every path under ``out_dir`` (and it) with its modification time (ns): what was there before
    an export, for :func:`apply_umask_tree`."""
    if not out_dir.exists():
        return {}
    return {p: p.lstat().st_mtime_ns for p in [out_dir, *out_dir.rglob("*")]}


def apply_umask_tree(out_dir: Path, before: dict[Path, int] | None = None) -> list[Path]:
    """Give the files and folders the export wrote under ``out_dir`` the mode the user's umask gives
    new ones (safetensors, and so ``save_pretrained``, writes its files 0600 whatever the umask).
    ``before``: :func:`tree_state` before the export; a folder it lists, and a file it lists unchanged
    (the user's own file in an existing folder), keeps its mode. Returns the paths changed."""
    before = before or {}
    written = [
        p
        for p in [out_dir, *out_dir.rglob("*")]
        if not p.is_symlink() and (p not in before or (not p.is_dir() and before[p] != p.lstat().st_mtime_ns))
    ]
    for path in written:
        apply_umask(path, directory=path.is_dir())
    return written


class PushError(RuntimeError):
    """The export cannot be pushed (no token, the Hub refused, offline, the network); one line."""


def push_to_hub(out_dir: Path, repo_id: str, private: bool = False) -> str:
    """Upload ``out_dir`` to the Hub model repository ``repo_id`` (created when missing); returns its URL.

    The token is huggingface_hub's own (``HF_TOKEN``, or ``hf auth login``); without one this is a
    :class:`PushError` before anything is sent. The Hub's refusals (``HfHubHTTPError``: 401, 403, a
    bad repository id), ``HF_HUB_OFFLINE`` (``OfflineModeIsEnabled``) and network or file errors
    (``OSError``) become a one-line :class:`PushError` too."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    token = os.environ.get("HF_TOKEN") or huggingface_hub.get_token()
    if not token:
        raise PushError(
            f"--push-to-hub {repo_id}: no Hugging Face token (set HF_TOKEN or run `hf auth login`)"
        )
    api = huggingface_hub.HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=repo_id,
            folder_path=out_dir,
            repo_type="model",
            commit_message=f"xlt export of {out_dir.name}",
        )
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as err:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise PushError(f"--push-to-hub {repo_id}: {type(err).__name__}: {first}") from err
    return str(url)
