"""Real token counts for the plan: the measured length distribution of each training task, and the
tokens a stage computes on after xlt's length-grouped batching pads each batch to its longest row.

The table (``token_stats.json`` beside this module) is written by ``python -m xlt.plan.tokens``: it
featurises the real local files (``../shared/data``) with xlt's own featurizer for the task's head at
the task's ``max_seq_length`` and the XLM-R SentencePiece tokenizer (the e5 conversion's), and keeps,
per task, the quantiles of the featurised row lengths (special tokens included), the rows per
example (QA windows) and what was measured. A training split that is not local is measured on the
nearest local split of the same data (named in ``measured_on``).

:func:`padded_tokens_per_example` draws lengths from those quantiles, cuts them at the stage's
``max_seq_length``, runs the real :class:`xlt.data.sampling.LengthGroupedBatchSampler` at the stage's
per-device batch and sums ``rows x longest row`` per batch: the tokens the encoder runs on. A task
without a measurement counts every row as padded to ``max_seq_length`` (the old upper bound), and the
plan says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

STATS_FILE = Path(__file__).with_name("token_stats.json")
QUANTILES = 50  # quantiles at 0, 2, ..., 100 %

# (task, split measured, language, why that split) for every training task the study uses; a task
# whose training split is not local is measured on a local split of the same data.
MEASURED: list[tuple[str, str, str, str, str]] = [
    ("mnli", "xnli", "dev", "en", "XNLI en dev: 2,490 MNLI-style pairs written like MNLI's (MNLI train not local)"),
    ("snli", "snli", "dev", "en", "SNLI dev (train not local; the same collection)"),
    ("anli_rounds", "anli_rounds", "dev_r1+dev_r2+dev_r3", "en", "ANLI R1-R3 dev (train not local)"),
    ("squad", "squad", "train", "en", "SQuAD v1.1 train (first 3,000 questions)"),
    ("squad2", "squad2", "dev", "en", "SQuAD v2.0 dev (train not local)"),
    ("hellaswag", "hellaswag", "dev", "en", "HellaSwag val (train not local)"),
    ("cosmosqa", "cosmosqa", "dev", "en", "Cosmos QA dev (train not local)"),
    ("csqa", "csqa", "train", "en", "CommonsenseQA train"),
    ("udpos", "udpos", "train", "en", "UD-POS English train (EWT, LinES, ParTUT)"),
]  # fmt: skip
SAMPLE = 3000  # examples featurised per task


@dataclass(frozen=True)
class TokenStats:
    task: str
    measured_on: str
    examples: int
    rows_per_example: float
    max_seq_length: int
    quantiles: tuple[int, ...]
    mean: float
    tokenizer: str

    def lengths(self, n: int) -> list[int]:
        """``n`` lengths spread evenly over the measured distribution (linear between quantiles)."""
        q = self.quantiles
        out = []
        for i in range(n):
            pos = (i + 0.5) / n * (len(q) - 1)
            lo = int(pos)
            hi = min(lo + 1, len(q) - 1)
            out.append(max(1, round(q[lo] + (q[hi] - q[lo]) * (pos - lo))))
        return out


@cache
def token_stats() -> dict[str, TokenStats]:
    if not STATS_FILE.exists():
        return {}
    raw = json.loads(STATS_FILE.read_text())
    return {
        name: TokenStats(**{**entry, "quantiles": tuple(entry["quantiles"])})
        for name, entry in raw["tasks"].items()
    }


@cache
def padded_tokens_per_example(
    task: str, per_device_batch: int, max_seq_length: int
) -> tuple[float, float] | None:
    """(tokens, tokens x padded length) per example after length grouping at ``per_device_batch``
    rows a batch, lengths cut at ``max_seq_length``: what the layers (linear in the tokens) and
    attention (in tokens x length) compute on. None when ``task`` has no measurement."""
    stats = token_stats().get(task)
    if stats is None:
        return None
    from xlt.data.sampling import LengthGroupedBatchSampler

    # Two mega-batches of the sampler's size, so grouping sorts as few rows together as a real epoch does.
    n = max(2 * per_device_batch * 200, 4000)
    lengths = [min(x, max_seq_length) for x in stats.lengths(n)]
    sampler = LengthGroupedBatchSampler(lengths, per_device_batch, shuffle=True, seed=0)
    tokens = squared = 0.0
    for batch in sampler:
        longest = max(lengths[i] for i in batch)
        tokens += len(batch) * longest
        squared += len(batch) * longest * longest
    return tokens / n * stats.rows_per_example, squared / n * stats.rows_per_example


def mean_tokens_per_example(task: str, max_seq_length: int) -> float | None:
    """Unpadded tokens per example (rows x mean length cut at ``max_seq_length``)."""
    stats = token_stats().get(task)
    if stats is None:
        return None
    lengths = [min(x, max_seq_length) for x in stats.lengths(4000)]
    return sum(lengths) / len(lengths) * stats.rows_per_example


def measure(data_dir: Path | None, cache_dir: Path, sample: int = SAMPLE) -> dict[str, dict[str, object]]:
    """Featurise ``sample`` examples of each task in :data:`MEASURED` and return its table entry."""
    from omegaconf import OmegaConf

    from xlt.data.datamodule import DataSettings, load_features
    from xlt.modeling.encoder import load_tokenizer
    from xlt.tasks.loading import resolve_source
    from xlt.tasks.registry import get_task

    tokenizer = load_tokenizer(OmegaConf.create({"source": "random"}), cache_dir)  # XLM-R's pieces
    source, directory = resolve_source("local", str(data_dir) if data_dir else None)
    settings = DataSettings(source, directory, cache_dir, tokenizer)
    out: dict[str, dict[str, object]] = {}
    for task, measured_task, split, lang, why in MEASURED:
        spec = get_task(measured_task)
        max_len = int(get_task(task).max_seq_length)
        rows, origin, examples = load_features(spec, spec.head, split, lang, settings, max_len, sample)
        lengths = sorted(int(x) for x in rows["length"])
        q = [
            lengths[min(len(lengths) - 1, round(i / QUANTILES * (len(lengths) - 1)))]
            for i in range(QUANTILES + 1)
        ]
        if directory is not None:
            origin = origin.replace(str(directory) + "/", "")  # relative to the data directory
        out[task] = {
            "task": task, "measured_on": f"{measured_task}/{split} ({why}; {origin})", "examples": len(examples),
            "rows_per_example": round(len(lengths) / len(examples), 4), "max_seq_length": max_len,
            "quantiles": q, "mean": round(sum(lengths) / len(lengths), 2),
            "tokenizer": "XLM-R SentencePiece, 250,002 pieces (e5 conversion)",
        }  # fmt: skip
        print(f"{task:12s} {len(examples):5d} examples  mean {out[task]['mean']:7.1f}  "
              f"rows/example {out[task]['rows_per_example']}  median {q[QUANTILES // 2]}  max {q[-1]}")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xlt.plan.tokens", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="real data (default ../shared/data)")
    parser.add_argument(
        "--cache-dir", type=Path, required=True, help="xlt cache (the e5 tokenizer is built there)"
    )
    parser.add_argument("--sample", type=int, default=SAMPLE)
    parser.add_argument("--write", action="store_true", help=f"rewrite {STATS_FILE.name}")
    args = parser.parse_args(argv)
    tasks = measure(args.data_dir, args.cache_dir, args.sample)
    if args.write:
        from datetime import date

        body = {"measured": str(date.today()), "script": "python -m xlt.plan.tokens --write", "tasks": tasks}
        lines = [f"  {json.dumps(name)}: {json.dumps(entry)}" for name, entry in tasks.items()]
        head = json.dumps({k: v for k, v in body.items() if k != "tasks"})[:-1]
        STATS_FILE.write_text(head + ', "tasks": {\n' + ",\n".join(lines) + "\n}}\n")
        print(f"wrote {STATS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
