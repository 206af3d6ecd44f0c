"""``python -m xlt.export <run_dir>``: a run's target-stage model as a Hugging Face model directory.

The directory holds the encoder as ``save_pretrained`` writes it (``AutoModel.from_pretrained(dir)``
loads it), the tokenizer, and the target head:

- a classification head with ``cls`` pooling on an XLM-R-type encoder is RoBERTa's own head (dense,
  tanh, out_proj), so the directory is saved as ``XLMRobertaForSequenceClassification`` (with the
  task's label names): ``AutoModelForSequenceClassification`` loads encoder and head, ``AutoModel``
  the encoder;
- every other head (tagging, QA, multiple choice, other poolings) has no matching transformers class
  here: its weights are in ``xlt_head.safetensors`` beside the encoder.

``xlt_head.safetensors`` is written in both cases (the head's own parameter names, a few MB at most):
``python -m xlt.evaluate <export_dir>`` reads it. ``xlt_config.yaml`` is the run's resolved config,
``xlt_export.json`` says what was exported from where, and ``README.md`` is a model card with the
run's config and results.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xlt.config import validate
from xlt.export_hub import (
    PushError,
    apply_umask_tree,
    debug_note,
    front_matter,
    hub_metadata,
    push_to_hub,
    tree_state,
)
from xlt.orchestration import rundir
from xlt.orchestration.plan_sections import debug_mode
from xlt.public_config import public_yaml
from xlt.results.report import format_table
from xlt.results.rows import read_results
from xlt.schema import ConfigError, upgrade_moved_targets
from xlt.tasks.registry import get_task
from xlt.utils.console import check_out_dir, cli_parser, run_cli

log = logging.getLogger("xlt")

EXPORT_FILE = "xlt_export.json"
CONFIG_FILE = "xlt_config.yaml"
HEAD_FILE = "xlt_head.safetensors"
_XLMR_TYPES = ("xlm-roberta", "xlm-roberta-xl")


class ExportError(ValueError):
    """A run directory that cannot be exported or evaluated; the message is one line."""


def run_config(run_dir: Path, name: str = rundir.CONFIG_FILE) -> DictConfig:
    """The config stored in a run (or export) directory; missing or unparsable: one line naming it."""
    path = run_dir / name
    if not path.is_file():
        raise ExportError(f"{run_dir}: no {name}: not an xlt run directory")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # noqa: BLE001 - yaml's and OmegaConf's errors
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ExportError(f"{where}: not a readable config ({str(err).splitlines()[0]})") from None
    if not isinstance(cfg, DictConfig) or not isinstance(cfg.get("target"), DictConfig):
        raise ExportError(f"{path}: expected a run's config (a mapping with a target group)")
    return upgrade_moved_targets(cfg)  # a run made before a class it names moved


def target_checkpoint(run_dir: Path) -> Path:
    """The target stage's selected (best) or final checkpoint, as state.json records it."""
    done = rundir.RunState.load(run_dir / rundir.STATE_FILE).stage("target")  # a broken file: one line
    if not done:
        raise ExportError(f"{run_dir}: the target stage has not finished (state.json has no stages.target)")
    recorded = done.get("best") or rundir.FINAL_CKPT
    # state.json records the path as the training run saw it (often relative to its working directory).
    path = rundir.stage_ckpt_dir(run_dir, "target") / Path(recorded).name
    if not path.exists():  # a file, or a sharded checkpoint's directory
        raise ExportError(f"{path}: the target stage's checkpoint is missing")
    return path


def load_target_module(cfg: DictConfig, target: Any, ckpt: Path) -> Any:
    """The target stage's TransferModule (encoder + head) with the checkpoint's weights, loaded by the
    run's own loader (``xlt.orchestration.weights.load_weights``: ``weights_only=True``, strict, one-line
    CheckpointError)."""
    from xlt.modeling.encoder import load_encoder  # these four import torch: not for --help
    from xlt.modeling.heads import build_head
    from xlt.modeling.module import TransferModule
    from xlt.orchestration.weights import load_weights

    encoder = load_encoder(cfg.model, Path(cfg.data.cache_dir).expanduser())  # the architecture
    head = build_head(target, encoder.config.hidden_size, cfg.model.pooling)
    module = TransferModule(encoder, head, target, cfg.target.lr, cfg.optim, val_sets=[], test_sets=[])
    try:
        load_weights(module, ckpt)
    except RuntimeError as err:  # CheckpointError, or weights that do not fit the architecture
        raise ExportError(" ".join(str(err).split("\n"))[:500]) from None
    return module


def results_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / rundir.RESULTS_FILE
    return read_results(path) if path.is_file() else []


def model_card(
    cfg: DictConfig,
    records: list[dict[str, Any]],
    source: str,
    hf_class: str,
    target: Any = None,
    debug: str = "",
) -> str:
    rows = rundir.rows_from_records([r for r in records if r.get("stage") == "target"])
    tables = [format_table(rows, "target", r.task, r.split) for r in rows]
    tables = list(dict.fromkeys(t for t in tables if t))
    if target is None:
        target = get_task(cfg.target.name, role="target")
    front = front_matter(
        hub_metadata(cfg, target, records, debug)
    )  # license, base_model, datasets, model-index
    inter = cfg.intermediate.name if cfg.get("intermediate") else "none"
    lines = [
        *front,
        "",
        f"# {cfg.model.name} fine-tuned on {cfg.target.name} (intermediate task: {inter})",
        "",
        f"Exported by `python -m xlt.export` from `{source}` as `{hf_class}`. The encoder was trained on "
        f"the English intermediate task ({inter}) and then on {cfg.target.name}'s English training data "
        f"({cfg.target.get('train_task') or cfg.target.name}); the other languages are zero-shot.",
        "",
        *([debug_note(debug), ""] if debug else []),
        "## Results (the run's results.jsonl, target stage)",
        "",
        *([f"```\n{t}\n```\n" for t in tables] or ["(no results recorded)", ""]),
        "## Config (the run's config.yaml; environment interpolations unresolved)",
        "",
        "```yaml",
        public_yaml(cfg).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def export(run_dir: Path, out_dir: Path) -> Path:
    """Write the run's target model to ``out_dir``; returns it."""
    from safetensors.torch import save_file

    from xlt.modeling.encoder import load_tokenizer

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg, target, ckpt = _exportable_run(run_dir)
    check_out_dir(out_dir, "--out")
    tokenizer = load_tokenizer(cfg.model, Path(cfg.data.cache_dir).expanduser())
    module = load_target_module(cfg, target, ckpt)
    encoder, head_state = module.encoder, module.heads[target.name].state_dict()
    encoder.eval()
    existing = tree_state(out_dir)  # the umask is applied to what this export writes, nothing else
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_class = _save_model(cfg, target, encoder, head_state, out_dir)
    tokenizer.save_pretrained(out_dir)
    save_file({k: v.contiguous() for k, v in head_state.items()}, str(out_dir / HEAD_FILE))
    (out_dir / CONFIG_FILE).write_text(public_yaml(cfg))  # ${oc.env:...} left unresolved: no secret
    info = _export_info(run_dir, ckpt, cfg, target, hf_class)
    (out_dir / EXPORT_FILE).write_text(json.dumps(info, indent=1) + "\n")
    debug = debug_mode(cfg.trainer)
    if debug:
        log.warning("%s is a debug run (%s): exported, with a warning in its model card", run_dir, debug)
    (out_dir / "README.md").write_text(
        model_card(cfg, results_rows(run_dir), str(run_dir), hf_class, target, debug)
    )
    apply_umask_tree(out_dir, existing)  # safetensors writes 0600; what export wrote gets the umask's mode
    return out_dir


def _exportable_run(run_dir: Path) -> tuple[DictConfig, Any, Path]:
    """The run's validated config, target task and target checkpoint; ExportError (one line) when the
    run trained nothing to export, has not finished, or its stored config is invalid."""

    cfg = run_config(run_dir)
    target = get_task(cfg.target.name, role="target")
    if not target.trainable:
        raise ExportError(f"{run_dir}: target {target.name} trains no head; nothing fine-tuned to export")
    ckpt = target_checkpoint(run_dir)
    try:
        cfg = validate(cfg)
    except ConfigError as err:  # the stored config itself (edited, or from another version)
        raise ExportError(f"{run_dir / rundir.CONFIG_FILE}: {err}") from None
    if cfg.scale.peft != "none":
        raise ExportError(f"{run_dir}: scale.peft={cfg.scale.peft}: exporting adapter runs is not supported")
    return cfg, target, ckpt


def _save_model(cfg: DictConfig, target: Any, encoder: Any, head_state: dict[str, Any], out_dir: Path) -> str:
    """Save the encoder (with the head, as RoBERTa's own classification head, where it is one) with
    ``save_pretrained``; returns the saved transformers class's name."""
    model_type = getattr(encoder.config, "model_type", "")
    if not (target.head == "classification" and cfg.model.pooling == "cls" and model_type in _XLMR_TYPES):
        encoder.save_pretrained(out_dir)
        return type(encoder).__name__
    from transformers import AutoModelForSequenceClassification

    config = encoder.config.__class__.from_dict(encoder.config.to_dict())
    config.num_labels = len(target.label_names)
    config.id2label = dict(enumerate(target.label_names))
    config.label2id = {name: i for i, name in enumerate(target.label_names)}
    config.architectures = None
    full = AutoModelForSequenceClassification.from_config(config)
    base = getattr(full, full.base_model_prefix)
    base.load_state_dict(encoder.state_dict())  # strict: neither has a pooler
    full.classifier.load_state_dict(head_state)
    full.save_pretrained(out_dir)
    return type(full).__name__


def _export_info(run_dir: Path, ckpt: Path, cfg: DictConfig, target: Any, hf_class: str) -> dict[str, Any]:
    """What ``EXPORT_FILE`` records: what was exported, from where, as which class."""
    return {
        "run_dir": str(run_dir.resolve()),
        "checkpoint": str(ckpt.resolve()),
        "task": target.name,
        "head": target.head,
        "pooling": cfg.model.pooling,
        "hf_class": hf_class,
        "label_names": list(target.label_names or []),
        "logged_step": (rundir.RunState.load(run_dir / rundir.STATE_FILE).stage("target") or {}).get(
            "logged_step", 0
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = cli_parser(
        "python -m xlt.export",
        __doc__.split("\n\n")[0],
        [
            "xlt-export outputs/<date>/<time> --out exported/xnli",
            "xlt-export outputs/<date>/<time> --push-to-hub your-name/xlmr-large-xnli   # with HF_TOKEN set",
            "python -m xlt.evaluate exported/xnli   # evaluate the export on every language of its target",
        ],
    )
    parser.add_argument(
        "run_dir", type=Path, help="a finished run directory (config.yaml, state.json, checkpoints/)"
    )
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: <run_dir>/export)")
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        help="then upload it to this Hub model repository (needs HF_TOKEN or `hf auth login`)",
    )
    parser.add_argument(
        "--private", action="store_true", help="with --push-to-hub: create the repository private"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or args.run_dir / "export"
    code = run_cli(
        lambda: export(args.run_dir, out) and None,  # type: ignore[arg-type,return-value]
        prefix="xlt.export: ",
    )  # any error: one line, 2
    if code:
        return code
    print(f"exported {args.run_dir} -> {out}")
    if args.push_to_hub:
        try:
            print(f"pushed to {push_to_hub(out, args.push_to_hub, args.private)}")
        except PushError as err:
            print(f"xlt.export: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
