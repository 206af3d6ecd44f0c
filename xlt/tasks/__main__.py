"""``python -m xlt.tasks [TASK ...]``: the registered tasks, their heads, metrics and languages, and
which of their files are present in the data directory here.

Without a task: one line a task (roles, head, metrics, English training source, the English
train/dev files and how many test languages are present). With tasks: one line per (split, language)
for each, naming the file found, or the file it needs (the first layout it looks for) when missing.
The data directory: ``--data-dir``, else the one a run uses without a ``data.dir`` override
(``$XLT_DATA_DIR``, else ``../shared/data`` beside the project). This command reads no Hydra
overrides: for a run's ``data.dir=...`` pass the same folder as ``--data-dir``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from xlt.tasks.loading import local_files, resolve_source, split_parts
from xlt.tasks.registry import UnknownTaskError, all_tasks, get_task
from xlt.tasks.spec import DataError
from xlt.utils.console import cli_parser, text_table

EXAMPLES = (
    "python -m xlt.tasks                 # every task: head, languages, data present here",
    "python -m xlt.tasks xnli udpos      # per language: the file found, or the file needed",
    "python -m xlt.tasks --data-dir /data/xtreme tatoeba",
)


def _present(spec, split: str, lang: str, data_dir: Path | None) -> tuple[bool, str]:  # type: ignore[no-untyped-def]
    """(found, what): the files found, or the file the first layout needs."""
    if data_dir is None:
        return False, "no data directory"
    found = local_files(spec, split, lang, data_dir)
    if found:
        return True, ", ".join(str(p.relative_to(data_dir)) for p in found)
    needed = []
    for part in split_parts(split):
        layouts = spec.raw.get(part, ())
        needed.append(
            layouts[0].pattern.format(lang=lang, lang3=spec.code(lang)) if layouts else f"(no {part} layout)"
        )
    return False, "needs " + ", ".join(needed)


def summary(data_dir: Path | None) -> list[str]:
    rows = [("task", "roles", "head", "selects on", "trains on", "en train", "en dev", "test languages here")]
    for name, spec in sorted(all_tasks().items()):
        train_spec = spec
        if spec.train_task and spec.train_task != name:
            train_spec = all_tasks().get(spec.train_task, spec)
        train = "train" in train_spec.raw and _present(train_spec, "train", "en", data_dir)[0]
        dev = spec.dev_split in spec.raw and _present(spec, spec.dev_split, "en", data_dir)[0]
        tests = [
            lang
            for lang in spec.languages
            if spec.test_split in spec.raw and _present(spec, spec.test_split, lang, data_dir)[0]
        ]
        tested = "target" in spec.roles or "probe" in spec.roles
        rows.append(
            (
                name,
                ",".join(spec.roles),
                spec.head,
                spec.metrics[0],
                spec.train_task or name if spec.trainable else "-",
                ("yes" if train else "no") if spec.trainable else "-",
                ("yes" if dev else "no") if spec.trainable else "-",
                (
                    f"{len(tests)}/{len(spec.languages)}"
                    + (f" ({','.join(tests)})" if 0 < len(tests) <= 6 else "")
                )
                if tested
                else "-",
            )
        )
    return text_table(rows[0], rows[1:], "plain").splitlines()


def detail(name: str, data_dir: Path | None) -> list[str]:
    spec = get_task(name)
    lines = [
        f"{name}: {spec.description} (head {spec.head}; metrics {', '.join(spec.metrics)}; "
        f"{len(spec.languages)} languages: {' '.join(spec.languages)})"
    ]
    rows = []
    for split in spec.raw:
        languages = spec.languages if split == spec.test_split or not spec.trainable else ("en",)
        for lang in languages:
            found, what = _present(spec, split, lang, data_dir)
            rows.append([split, lang, "present" if found else "MISSING", what])
    return [*lines, *text_table(["split", "lang", "data", "file"], rows, "plain", indent="  ").splitlines()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli_parser("python -m xlt.tasks", __doc__.split("\n\n")[0], EXAMPLES)
    parser.add_argument("tasks", nargs="*", help="show these tasks language by language")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="the data directory (default: $XLT_DATA_DIR, else ../shared/data; "
        "a run's data.dir=... goes here)",
    )
    args = parser.parse_args(argv)

    try:
        _, data_dir = resolve_source("local" if args.data_dir else "auto", args.data_dir)
        print(f"data directory: {data_dir or '(none found: pass --data-dir or set XLT_DATA_DIR)'}")
        lines = (
            [line for name in args.tasks for line in detail(name, data_dir)]
            if args.tasks
            else summary(data_dir)
        )
    except (UnknownTaskError, DataError) as err:
        print(f"xlt.tasks: {str(err).strip(chr(34) + chr(39))}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
