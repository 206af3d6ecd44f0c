"""``python -m xlt.evaluate SOURCE [--out DIR] [key=value ...]``: evaluate a trained model on every
language of its target, without training.

SOURCE is a run directory (its target stage's selected checkpoint, as state.json records it), a
checkpoint file inside one (``<run>/checkpoints/target/best.ckpt``), or a directory written by
``python -m xlt.export``. The run's own config is used (``key=value`` dotlist overrides change it,
e.g. ``target.languages=[en,de]`` or ``logger.kind=none``); the results (``results.jsonl``, the same
dev/test rows, averages and gap as the training run's target stage), ``state.json`` and the test
predictions go to a new run directory (default ``outputs/<date>/<time>-evaluate``).

It runs the training run's own code: an evaluation-only plan (xlt.orchestration.plan.evaluation_only:
the target stage with SOURCE's weights, nothing trained) executed by the same parts as a training run.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

from omegaconf import DictConfig, OmegaConf

from xlt.config import validate
from xlt.export import (
    CONFIG_FILE,
    EXPORT_FILE,
    HEAD_FILE,
    ExportError,
    run_config,
    target_checkpoint,
)
from xlt.orchestration import rundir
from xlt.orchestration.plan import build_plan, evaluation_only
from xlt.training.sharded_ckpt import DCP_METADATA
from xlt.utils.console import check_out_dir, cli_parser, quiet_terminal, run_cli

if TYPE_CHECKING:
    import torch

log = logging.getLogger("xlt")


def resolve_source(source: Path) -> tuple[str, Path, DictConfig]:
    """(kind, checkpoint or export dir, config) of SOURCE; kind is ``checkpoint`` or ``export``."""
    if source.is_dir() and (source / EXPORT_FILE).is_file():
        return "export", source, run_config(source, CONFIG_FILE)
    if source.is_dir() and not (source / DCP_METADATA).is_file():
        cfg = run_config(source)
        return "checkpoint", target_checkpoint(source), cfg
    if source.exists():  # a checkpoint file, or a sharded checkpoint directory (xlt/training/sharded_ckpt.py)
        run_dir = source.parent.parent.parent  # <run>/checkpoints/<stage>/<file>
        if source.parent.name != "target":
            raise ExportError(
                f"{source}: not a target-stage checkpoint (expected <run>/checkpoints/target/*.ckpt)"
            )
        return "checkpoint", source, run_config(run_dir)
    raise ExportError(f"{source}: no such run directory, checkpoint or exported model")


def _checkpoint_from_export(export_dir: Path, encoder: torch.nn.Module, task: str, out: Path) -> Path:
    """The exported encoder (as loaded) and head as a target-stage checkpoint, for the stage to load."""
    import torch  # here, not at the top: `--help` answers without loading torch
    from safetensors.torch import load_file

    head = load_file(str(export_dir / HEAD_FILE))
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update({f"heads.{task}.{k}": v for k, v in head.items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state}, out)
    return out


def source_step(source: Path, kind: str) -> int:
    """The logger step the training run recorded for its target stage (0 when it recorded none)."""
    if kind == "export":
        return int(json.loads((source / EXPORT_FILE).read_text()).get("logged_step", 0))
    run_dir = source if source.is_dir() else source.parent.parent.parent
    state = rundir.RunState.load(run_dir / rundir.STATE_FILE).data  # a broken file: one line naming it
    return int((state.get("stages", {}).get("target") or {}).get("logged_step", 0))


def _dotlist(overrides: list[str]) -> DictConfig:
    """``key=value`` overrides as a config; one without ``=`` (it would set the key to null) or with
    a value OmegaConf cannot parse is refused in one line naming it."""
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ExportError(f"override {item!r}: expected key=value (e.g. target.languages=[en,de])")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except Exception as err:  # noqa: BLE001 - OmegaConf's grammar errors
        raise ExportError(f"overrides {' '.join(overrides)}: {str(err).splitlines()[0]}") from None


def _evaluation_config(kind: str, weights: Path, cfg: DictConfig, overrides: list[str] | None) -> DictConfig:
    """The training run's config for evaluating its target: no intermediate stage (its weights are in
    the target checkpoint), no probes; an export's directory is the model (encoder and tokenizer)."""
    OmegaConf.set_struct(cfg, False)
    cfg.intermediate = None
    cfg.probe.tasks = []
    cfg.resume = True
    if kind == "export":
        cfg.model.source, cfg.model.hub_id, cfg.model.revision = "hub", str(Path(weights).resolve()), None
        if "keep_layers" in cfg.model:
            cfg.model.keep_layers = None
    if overrides:
        cfg = cast(DictConfig, OmegaConf.merge(cfg, _dotlist(overrides)))
    return validate(cfg)


def _open_out_dir(out_dir: Path, config_yaml: str, source: Path) -> None:
    """A new run directory: its config (the plan's ``config.yaml`` text), its log file, state.json
    naming the source."""
    check_out_dir(out_dir, "--out")
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / rundir.STATE_FILE).exists():
        raise ExportError(f"{out_dir}: already holds a run (state.json); name a new --out directory")
    (out_dir / rundir.CONFIG_FILE).write_text(config_yaml)  # ${oc.env:...} left unresolved
    log_file = logging.FileHandler(out_dir / "evaluate.log")  # everything the terminal leaves out
    log_file.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(log_file)
    state = rundir.RunState.load(out_dir / rundir.STATE_FILE)
    state.data["evaluated_from"] = str(source.resolve())
    state.save()


def evaluate(source: Path, out_dir: Path, overrides: list[str] | None = None) -> list:
    from xlt.orchestration.run import execute, print_report
    from xlt.orchestration.session import RunSession

    source = Path(source)
    kind, weights, cfg = resolve_source(source)
    intermediate = cfg.intermediate.name if cfg.get("intermediate") else "none"
    planned = build_plan(_evaluation_config(kind, weights, cfg, overrides), out_dir)  # the config's last use
    _open_out_dir(out_dir, planned.config.yaml, source)
    step = source_step(source, kind)  # log at the step the weights were trained to
    checkpoint = Path(weights).resolve()
    if kind == "export":  # written once the session has loaded the exported encoder
        checkpoint = rundir.stage_ckpt_dir(out_dir, "target") / "exported.ckpt"
    plan = evaluation_only(planned, checkpoint, step)
    session = RunSession.open(plan)
    try:
        if kind == "export":
            target = plan.stages[-1].task
            _checkpoint_from_export(Path(weights), session.model.encoder, target, checkpoint)
        session.relabel(intermediate=intermediate)
        session.ctx.extra["evaluated_from"] = str(source.resolve())
        rows = execute(session)
        session.finish()
    finally:
        session.close()
        if kind == "export":
            checkpoint.unlink(missing_ok=True)  # a copy of the exported weights; the export is the source
    print_report(rows, session.skipped)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = cli_parser(
        "python -m xlt.evaluate",
        __doc__.split("\n\n")[0],
        [
            "xlt-evaluate outputs/<date>/<time> --out outputs/eval-xnli   # a run directory's selected checkpoint",
            "python -m xlt.evaluate exported/xnli target.languages=[en,de] logger.kind=none",
        ],
    )
    parser.add_argument(
        "source", type=Path, help="a run directory, a target checkpoint, or an exported model directory"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="new run directory (default: outputs/<date>/<time>-evaluate)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="dotlist overrides of the run's config, e.g. logger.kind=none"
    )
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    quiet_terminal()
    out = args.out or Path("outputs") / datetime.datetime.now().strftime("%Y-%m-%d/%H-%M-%S-evaluate")
    # Any error (bad input, validation, a broken checkpoint, a run directory someone touched): one line, exit 2.
    code = run_cli(
        lambda: evaluate(args.source, out, args.overrides) and None,  # type: ignore[arg-type,return-value]
        prefix="xlt.evaluate: ",
    )
    if code:
        return code
    print(f"results: {out / rundir.RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
