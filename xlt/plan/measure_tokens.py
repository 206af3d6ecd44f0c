"""``python -m xlt.plan.measure_tokens --cache-dir DIR --write``: measure the token lengths of every
training task on the real local files and rewrite ``xlt/plan/token_stats.json`` (see
:mod:`xlt.plan.tokens`, which reads it; kept apart so the plan does not import the data pipeline)."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path

from omegaconf import OmegaConf

from xlt.plan.tokens import QUANTILES, STATS_FILE
from xlt.tasks.loading import resolve_source
from xlt.tasks.registry import get_task
from xlt.utils.console import cli_parser

# (task, split measured, language, why that split) for every training task the study uses; a task
# whose training split is not local is measured on a local split of the same data.
MEASURED: list[tuple[str, str, str, str, str]] = [
    (
        "mnli",
        "xnli",
        "dev",
        "en",
        "XNLI en dev: 2,490 MNLI-style pairs written like MNLI's (MNLI train not local)",
    ),
    ("snli", "snli", "dev", "en", "SNLI dev (train not local; the same collection)"),
    ("anli_rounds", "anli_rounds", "dev_r1+dev_r2+dev_r3", "en", "ANLI R1-R3 dev (train not local)"),
    ("squad", "squad", "train", "en", "SQuAD v1.1 train (first 3,000 questions)"),
    ("squad2", "squad2", "dev", "en", "SQuAD v2.0 dev (train not local)"),
    ("hellaswag", "hellaswag", "dev", "en", "HellaSwag val (train not local)"),
    ("cosmosqa", "cosmosqa", "dev", "en", "Cosmos QA dev (train not local)"),
    ("csqa", "csqa", "train", "en", "CommonsenseQA train"),
    ("udpos", "udpos", "train", "en", "UD-POS English train (EWT, LinES, ParTUT)"),
]
SAMPLE = 3000  # examples featurised per task


def measure(data_dir: Path | None, cache_dir: Path, sample: int = SAMPLE) -> dict[str, dict[str, object]]:
    """Featurise ``sample`` examples of each task in :data:`MEASURED` and return its table entry."""
    from xlt.data.datamodule import DataSettings, load_features
    from xlt.modeling.encoder import load_tokenizer

    tokenizer = load_tokenizer(
        OmegaConf.create({"source": "random", "arch": "xlmr"}), cache_dir
    )  # XLM-R pieces
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
            "task": task,
            "measured_on": f"{measured_task}/{split} ({why}; {origin})",
            "examples": len(examples),
            "rows_per_example": round(len(lengths) / len(examples), 4),
            "max_seq_length": max_len,
            "quantiles": q,
            "mean": round(sum(lengths) / len(lengths), 2),
            "tokenizer": "XLM-R SentencePiece, 250,002 pieces (e5 conversion)",
        }
        print(
            f"{task:12s} {len(examples):5d} examples  mean {out[task]['mean']:7.1f}  "
            f"rows/example {out[task]['rows_per_example']}  median {q[QUANTILES // 2]}  max {q[-1]}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = cli_parser(
        "python -m xlt.plan.measure_tokens",
        "Measure training-task token lengths on the real local files.",
        [
            "python -m xlt.plan.measure_tokens --cache-dir ~/.cache/xlt            # print the lengths",
            "python -m xlt.plan.measure_tokens --cache-dir ~/.cache/xlt --write    # and rewrite token_stats.json",
        ],
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="real data (default ../shared/data)")
    parser.add_argument(
        "--cache-dir", type=Path, required=True, help="xlt cache (the e5 tokenizer is built there)"
    )
    parser.add_argument("--sample", type=int, default=SAMPLE)
    parser.add_argument("--write", action="store_true", help=f"rewrite {STATS_FILE.name}")
    args = parser.parse_args(argv)
    tasks = measure(args.data_dir, args.cache_dir, args.sample)
    if args.write:
        body = {
            "measured": str(date.today()),
            "script": "python -m xlt.plan.measure_tokens --write",
            "tasks": tasks,
        }
        lines = [f"  {json.dumps(name)}: {json.dumps(entry)}" for name, entry in tasks.items()]
        head = json.dumps({k: v for k, v in body.items() if k != "tasks"})[:-1]
        STATS_FILE.write_text(head + ', "tasks": {\n' + ",\n".join(lines) + "\n}}\n")
        print(f"wrote {STATS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
