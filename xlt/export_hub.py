"""What ``python -m xlt.export`` adds for the Hugging Face Hub: the model card's metadata (license,
base model, datasets, ``model-index`` with the run's test results), the note a debug run's card
carries, the file modes of an export, and ``--push-to-hub``.

The card's YAML front matter follows the Hub's model-card metadata: ``license`` is the base model's
(``model.license`` in ``conf/model/<name>.yaml``), ``base_model`` its hub id, ``datasets`` the hub
ids the target task is published under (its ``TaskSpec.hub``), and ``model-index`` one result per
(test language, metric) of the target stage, in percent as ``results.jsonl`` records them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

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
    if cfg.model.get("hub_id"):
        meta["base_model"] = str(cfg.model.hub_id)
    datasets = sorted({hub.path for hub in getattr(target, "hub", {}).values()})
    if datasets:
        meta["datasets"] = datasets
    if languages:
        meta["language"] = languages
    if debug:
        meta["tags"].append("debug-run")
    results = []
    task_type = HUB_TASK_TYPES.get(target.head, target.head)
    dataset_type = datasets[0] if datasets else target.name
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
                        "config": lang,
                    },
                    "metrics": metrics,
                }
            )
    if results:
        meta["model-index"] = [{"name": f"{cfg.model.name}-{target.name}", "results": results}]
    return meta


def front_matter(meta: dict[str, Any]) -> list[str]:
    """The ``---``-delimited YAML block a model card starts with."""
    import yaml

    return ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---"]


def debug_note(mode: str) -> str:
    """The card's warning for a debug or partial run ('' for a real run); ``mode`` is
    :func:`xlt.trainer.debug_mode` of the run's config."""
    if not mode:
        return ""
    return (
        f"**Debug run ({mode}): not a trained model.** Its training and evaluation stopped after a few "
        "batches; the weights and the numbers below are not results."
    )


def apply_umask_tree(out_dir: Path) -> None:
    """Give every file and folder under ``out_dir`` the mode the user's umask gives new ones:
    safetensors (and so ``save_pretrained``) writes its files 0600 whatever the umask."""
    from xlt.results.rows import apply_umask

    for path in [out_dir, *out_dir.rglob("*")]:
        if not path.is_symlink():
            apply_umask(path, directory=path.is_dir())


class PushError(RuntimeError):
    """The export cannot be pushed (no token); the message is one line."""


def push_to_hub(out_dir: Path, repo_id: str, private: bool = False) -> str:
    """Upload ``out_dir`` to the Hub model repository ``repo_id`` (created when missing); returns its URL.

    The token is huggingface_hub's own (``HF_TOKEN``, or ``hf auth login``); without one this is a
    :class:`PushError` before anything is sent."""
    import huggingface_hub

    token = os.environ.get("HF_TOKEN") or huggingface_hub.get_token()
    if not token:
        raise PushError(
            f"--push-to-hub {repo_id}: no Hugging Face token (set HF_TOKEN or run `hf auth login`)"
        )
    api = huggingface_hub.HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(
        repo_id=repo_id,
        folder_path=out_dir,
        repo_type="model",
        commit_message=f"xlt export of {out_dir.name}",
    )
    return str(url)
