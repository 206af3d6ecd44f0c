"""``python -m xlt.plan``: the jobs of a run or a sweep (expanded as Hydra's basic sweeper would),
each job's details and the table with the sweep's totals."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from xlt.config import validate  # its import registers `intermediate=none` before a sweep is composed
from xlt.orchestration.reuse import intermediate_key
from xlt.plan.jobs import GPUS, JobPlan, plan_job
from xlt.plan.memory import GB, Hardware, resolve_precision
from xlt.schema import CONF_DIR, ConfigError, to_container
from xlt.tasks.registry import get_task
from xlt.utils.console import cli_parser, report_error, run_cli, text_table


def sweep_jobs(overrides: Sequence[str]) -> list[list[str]]:
    """The jobs of ``-m`` overrides plus the composed config's ``hydra.sweeper.params``, as Hydra's
    basic sweeper lists them: the sweeper's params first, the command line's overriding them by key,
    and the cartesian product of every key's values, in the order the keys first appeared."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    # The primary config, as Hydra's multirun composes it: without the swept values.
    fixed = [str(o.input_line) for o in parser.parse_overrides(list(overrides)) if not o.is_sweep_override()]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        primary = compose("train", overrides=fixed, return_hydra_config=True)
    params = OmegaConf.select(primary, "hydra.sweeper.params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(overrides)
    parsed = parser.parse_overrides(arguments)
    per_key: dict[str, list[str]] = {}
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ConfigError(f"{key}: only discrete sweeps (a,b,c) can be planned")
            per_key[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            per_key[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*per_key.values())]


def shared_key(cfg: DictConfig) -> str:
    """The reuse key of the job's intermediate stage as a GPU run of this sweep computes it (the same
    model revision and code for every job of one launch, so those parts are left equal). The audit's
    exclusions are known only when the job runs; a target that declares any (XQuAD removes SQuAD dev
    questions) may change the intermediate's data, so its jobs are counted as training their own."""

    precision = resolve_precision(str(cfg.scale.precision), Hardware())
    declared = get_task(cfg.target.name).exclusions
    exclusions = {"declared by target": cfg.target.name} if declared else {}
    return intermediate_key(
        to_container(cfg),
        model_revision="",
        exclusions=exclusions,
        code="",
        precision=precision,
        accelerator="cuda",
    ).name


def _fmt_count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.{1 if unit != 'B' else 2}f}{unit}"
    return f"{n:.0f}"


def _fmt_opt(value: float | None, fmt: str) -> str:
    return "?" if value is None else format(value, fmt)


def _fmt_hours(hours: float | None) -> str:
    if hours is None:
        return "?"
    return f"{hours:,.1f}" if hours == 0 or hours >= 0.1 else f"{hours:.1g}"


def describe(job: JobPlan, gpu: str, mfu: float) -> str:
    """The per-job block: where every number comes from."""
    name, peak = GPUS[gpu]
    m, p = job.memory, job.params
    lines = [
        f"{job.label}  (scale={job.scale}: {job.world} device(s), {m.shards} shard(s), "
        f"activation checkpointing {'on' if m.checkpointing else 'off'})"
    ]
    if job.batches:
        lines.append(f"  batch        {'; '.join(job.batches)}")
    published = f"; published {_fmt_count(job.published)}" if job.published else ""
    lines.append(
        f"  parameters   {p.total:,} total, {p.non_embedding:,} non-embedding (from the architecture{published})"
    )
    lines.append(
        f"  memory/GPU   weights {m.weights / GB:.2f} + gradients {m.gradients / GB:.2f} + AdamW {m.optimizer / GB:.2f}"
        f" + activations {m.activations / GB:.2f} (without checkpointing {m.activations_no_ckpt / GB:.2f}, with "
        f"{m.activations_ckpt / GB:.2f}; {m.stage} stage) + FSDP gathered {m.gathered / GB:.2f}"
        f" | AdamW step temporaries {m.optimizer_step / GB:.2f}"
        f" = peak {m.peak / GB:.2f} GB of {job.limit_gb:g}{'' if job.fits else '  EXCEEDS'}"
    )
    if job.host is not None:
        lines.append("  " + job.host.describe())
    for t in job.tokens:
        per = None if t.tokens_per_epoch is None or not t.examples else t.tokens_per_epoch / t.examples
        lines.append(
            f"  tokens       {t.stage}: {_fmt_opt(t.examples, ',')} sequences x {t.epochs:g} epochs x "
            f"{_fmt_opt(per, ',.1f')} tokens after length grouping (max {t.seq_len}) = "
            f"{_fmt_opt(t.tokens, ',.0f')}{' (upper bound for unmeasured tasks)' if t.upper_bound else ''}"
        )
        lines += [f"                 {s}" for s in t.sources]
    hours = job.gpu_hours(peak, mfu)
    recompute = " + 1 recomputed forward (activation checkpointing)" if job.passes == 4 else ""
    lines.append(
        f"  compute      (forward + backward{recompute}) x (2 x {p.non_embedding:,} x tokens + attention "
        f"4 x layers x hidden x tokens x length) = {_fmt_opt(job.flops, '.3g')} FLOP "
        f"(model FLOPs {_fmt_opt(job.model_flops, '.3g')}) = {_fmt_hours(hours)} GPU-hours on {name} at "
        f"{mfu:.0%} utilisation ({_fmt_hours(None if hours is None else hours / job.world)} h on "
        f"{job.world} GPU(s))"
    )
    return "\n".join(lines)


def table(jobs: list[JobPlan], gpu: str, mfu: float) -> str:
    name, peak = GPUS[gpu]
    header = [
        "job",
        "params",
        "non-emb",
        "scale",
        "GPUs",
        "mem/GPU GB",
        "ckpt",
        "fits",
        "tokens",
        "PFLOP",
        f"GPU-h ({name}, {mfu:.0%} MFU)",
    ]
    rows = []
    for job in jobs:
        flops, hours = job.flops, job.gpu_hours(peak, mfu)
        rows.append(
            [
                job.label,
                _fmt_count(job.params.total),
                _fmt_count(job.params.non_embedding),
                job.scale,
                str(job.world),
                f"{job.memory.peak / GB:.1f}",
                "yes" if job.memory.checkpointing else "no",
                "yes" if job.fits else "NO",
                "?" if job.total_tokens is None else _fmt_count(job.total_tokens),
                _fmt_opt(None if flops is None else flops / 1e15, ",.0f"),
                _fmt_hours(hours),
            ]
        )
    total, unknown, shared, trained = 0.0, 0, 0, set()
    for job in jobs:
        hours = job.gpu_hours(peak, mfu)
        if hours is None:
            unknown += 1
            continue
        if job.intermediate_key is not None:
            if job.intermediate_key in trained:  # another job of the sweep trains it
                hours -= job.stage_gpu_hours("intermediate", peak, mfu)
                shared += 1
            trained.add(job.intermediate_key)
        total += hours
    align = ("left", "right", "right", "left", "right", "right", "left", "left", "right", "right", "right")
    out = [text_table(header, rows, "markdown", align), ""]  # a markdown table ends at a blank line
    out.append(
        f"total: {len(jobs)} job(s), {total:,.1f} GPU-hours on {name} at {mfu:.0%} MFU"
        + (f" ({unknown} job(s) with an unknown training-set size not counted)" if unknown else "")
        + (
            f"; {shared} job(s) reuse the intermediate stage another job trains (reuse.intermediate): "
            "counted once"
            if shared
            else ""
        )
    )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: _main(argv), prefix="xlt.plan: ")  # any error: one line on stderr, exit 2


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args, overrides = parser.parse_known_args(argv)
    if not 0 < args.mfu <= 1:
        parser.error(f"--mfu {args.mfu}: expected a fraction in (0, 1]")
    from hydra.errors import HydraException

    try:
        plans = plan_jobs(overrides, args.multirun)
    except (ConfigError, HydraException) as err:
        return report_error(err, "xlt.plan: ")
    refused = [job for job in plans if not job.fits]
    if not args.multirun and refused:
        print(refused[0].refusal(), file=sys.stderr)
        return 2
    if not args.multirun or args.verbose:
        print("\n\n".join(describe(p, args.gpu, args.mfu) for p in plans))
        print()
    print(table(plans, args.gpu, args.mfu))
    print(HOW_ESTIMATED)
    for job in refused:
        print(job.refusal(), file=sys.stderr)
    return 2 if refused else 0


def _parser() -> argparse.ArgumentParser:
    parser = cli_parser(
        "python -m xlt.plan",
        "Estimate parameters, memory per GPU, tokens, FLOPs and GPU-hours of a run or a sweep "
        "(the same overrides as xlt.train; nothing is launched).",
        [
            "xlt-plan +intermediate=mnli +target=xnli model=xlmr_large scale=xlmr_large",
            "python -m xlt.plan -m +sweep=scale_gap --gpu a100 --mfu 0.35   # the whole study",
        ],
    )
    parser.add_argument(
        "-m", "--multirun", action="store_true", help="expand a sweep (+sweep=NAME, a,b lists)"
    )
    parser.add_argument("--gpu", choices=sorted(GPUS), default="h100", help="GPU whose bf16 peak is used")
    parser.add_argument(
        "--mfu", type=float, default=0.4, help="model FLOPs utilisation assumed (default 0.4)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="per-job details under a sweep")
    return parser


# Printed under the table: where each number comes from.
HOW_ESTIMATED = (
    "\nMemory: arithmetic estimate per GPU (see xlt/plan/memory.py), checked against CPU measurements only. "
    "Tokens: examples x epochs x tokens per example after length grouping (measured lengths, "
    "xlt/plan/token_stats.json; max_seq_length where a task has none). FLOPs: 2 x non-embedding parameters "
    "x tokens + attention per forward, x3 for forward and backward, x4 with activation checkpointing's "
    "recomputation (training only; evaluation not counted); GPU-hours at the stated utilisation of those FLOPs."
)


def plan_jobs(overrides: Sequence[str], multirun: bool) -> list[JobPlan]:
    """The plan of each job of the run (``multirun``: of the sweep), in order."""
    from hydra import compose, initialize_config_dir

    jobs = sweep_jobs(overrides) if multirun else [list(overrides)]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        composed = [compose("train", overrides=job) for job in jobs]
    # Validate as a CPU run would (no GPU refusal there), then judge the GPU estimate here.
    return [
        _plan_one(job, cfg, validate(_as_cpu_run(cfg)), f"{i}: " if multirun else None)
        for i, (job, cfg) in enumerate(zip(jobs, composed, strict=True), 1)
    ]


def _as_cpu_run(cfg: DictConfig) -> DictConfig:
    as_cpu = OmegaConf.merge(cfg, {"trainer": {"accelerator": "cpu"}})
    assert isinstance(as_cpu, DictConfig)
    return as_cpu


def _plan_one(overrides: list[str], composed: DictConfig, cfg: DictConfig, number: str | None) -> JobPlan:
    """One job's plan from its composed and validated config, labelled by its overrides (after
    ``number`` in a sweep, whose jobs also get the reuse key of their intermediate stage)."""
    label = " ".join(o for o in overrides if not o.startswith(("+sweep=", "hydra"))) or "(defaults)"
    # A run on CPU (trainer.accelerator=cpu) is planned for the CPU: memory, host RAM with the model.
    on_cpu = str(OmegaConf.select(composed, "trainer.accelerator")) == "cpu"
    job = plan_job(cfg, label if number is None else number + label, Hardware(gpu=False) if on_cpu else None)
    if number is not None and cfg.get("intermediate") and cfg.reuse.intermediate:
        job.intermediate_key = shared_key(cfg)
    return job
