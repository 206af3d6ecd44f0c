"""Contamination audit: before any training, every set a run trains or selects on is checked against
every test set of its target, in every language of the target.

``python -m xlt.audit <overrides>`` takes the overrides of ``xlt.train`` and prints the audit alone.

What is compared, how, and what then: docs/audit.md.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from xlt.audit_fields import FieldAudit, FieldChecker, FieldIndex, field_keys, normalise
from xlt.tasks.spec import DataError, Example, TaskSpec

log = logging.getLogger(__name__)

SEP = "\x1f"  # between the normalised fields of one example
# An example with fewer letters and digits than this is compared by id only: "Thank you.", "Kind
# regards", "1." or a punctuation-only line recur in any large corpus (UD English EWT's train and test
# share 438 such sentences); their match is language, not a copied test set.
MIN_TEXT_CHARS = 20
Index = dict[str, tuple[set[str], set[bytes]]]  # test language -> (example ids, text digests)


class ContaminationError(DataError):
    """A set the run trains or selects on shares examples with a test set, and no exclusion covers it."""


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def text_keys(ex: Example) -> list[bytes]:
    """The digests of an example's normalised text (one per example; one per sentence for a BUCC corpus)."""
    if "question" in ex and "context" in ex:
        fields: list[Any] = [ex["question"], ex["context"]]
    elif "text_a" in ex:
        fields = [ex["text_a"], ex.get("text_b") or ""]
    elif "words" in ex:
        fields = [" ".join(ex["words"])]
    elif "choices" in ex:
        fields = [ex.get("context", ""), *ex["choices"]]
    elif "text" in ex and "en" in ex:
        fields = [ex["text"], ex["en"]]
    elif "src_texts" in ex:
        texts = [normalise(t) for t in (*ex["src_texts"], *ex["trg_texts"])]
        return [_digest(t) for t in texts if len(t) >= MIN_TEXT_CHARS]
    else:
        raise DataError(f"audit: no text fields to compare in an example with fields {sorted(ex)}")
    parts = [normalise(str(f)) for f in fields]
    if sum(map(len, parts)) < MIN_TEXT_CHARS:
        return []
    return [_digest(SEP.join(parts))]


def example_id(ex: Example) -> str | None:
    ident = ex.get("id")
    return None if ident is None or str(ident) == "" else str(ident)


@dataclass(frozen=True)
class Removal:
    """What a declared exclusion removes from one set (``task/split``): these ids and text digests."""

    name: str
    ids: frozenset[str]
    keys: frozenset[bytes]
    because: str  # the test set(s) the examples are in
    fields: tuple[str, ...] = ()  # text fields whose digests (field_keys) also remove an example
    field_keys: frozenset[bytes] = frozenset()

    def matches(self, ex: Example) -> bool:
        ident = example_id(ex)
        if (ident is not None and ident in self.ids) or any(k in self.keys for k in text_keys(ex)):
            return True
        return bool(self.field_keys) and any(
            name in self.fields and key in self.field_keys for name, key in field_keys(ex, MIN_TEXT_CHARS)
        )

    @property
    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        for item in sorted(self.ids):
            h.update(item.encode() + b"\0")
        for key in sorted(self.keys):
            h.update(key)
        if self.field_keys:
            h.update(("|fields:" + ",".join(self.fields)).encode())
            for key in sorted(self.field_keys):
                h.update(key)
        return h.hexdigest()


def apply_removal(examples: list[Example], removal: Removal | None) -> list[Example]:
    return examples if removal is None else [ex for ex in examples if not removal.matches(ex)]


@dataclass(frozen=True)
class RunSet:
    """One set a run trains or selects on: ``task``'s ``split`` (English), read through ``reader``'s spec."""

    stage: str  # intermediate | target
    role: str  # train | select
    task: str  # the spec whose split is read
    split: str  # one split (a '+'-joined split is one RunSet per part)

    @property
    def name(self) -> str:
        return f"{self.task}/{self.split}"


@dataclass
class SetAudit:
    run_set: RunSet
    origin: str = ""
    examples: int = 0
    absent: str = ""  # why the set was not read (no file): the run then fails or skips it on its own
    per_language: dict[str, int] = field(default_factory=dict)  # test language -> examples matching it
    matched_ids: list[str] = field(default_factory=list)
    short: int = 0  # examples too short to compare by text (MIN_TEXT_CHARS)
    matched: int = 0  # examples matching some test example (by id or text)
    by_id: int = 0
    by_text: int = 0
    excluded: bool = False  # an exclusion covers the overlap: the matched examples are removed
    reason: str = ""
    removal: Removal | None = None
    fields: FieldAudit = field(default_factory=FieldAudit)
    not_checked: str = ""  # why nothing was compared (no test data)

    @property
    def removed(self) -> int:
        """Examples the run leaves out of this set: whole-example and declared-field matches."""
        return (self.matched + self.fields.excluded) if self.excluded else 0

    def record(self) -> dict[str, Any]:
        s = self.run_set
        rec: dict[str, Any] = {"stage": s.stage, "role": s.role, "set": s.name, "origin": self.origin,
                               "examples": self.examples, "overlap": self.matched, "by_id": self.by_id,
                               "by_text": self.by_text, "short": self.short, "overlap_by_language": self.per_language}  # fmt: skip
        if self.absent:
            rec["absent"] = self.absent
        if self.not_checked:
            rec["not_checked"] = self.not_checked
        rec.update(self.fields.record())
        if self.matched or self.removed:
            rec["excluded"] = self.removed
            rec["kept"] = self.examples - self.removed
            rec["excluded_because"] = self.reason
            rec["excluded_ids"] = self.matched_ids
        return rec


@dataclass
class AuditReport:
    target: str
    test_split: str
    test_languages: dict[str, int]  # language -> test examples read
    test_absent: list[str]
    sets: list[SetAudit]
    seconds: float = 0.0

    @property
    def violations(self) -> list[SetAudit]:
        return [s for s in self.sets if s.matched and not s.excluded]

    def removals(self) -> dict[str, Removal]:
        return {s.run_set.name: s.removal for s in self.sets if s.removal is not None}

    def check(self) -> None:
        """Raise the one-line ContaminationError when an overlap has no declared exclusion."""
        bad = self.violations
        if not bad:
            return
        parts = []
        for s in bad:
            langs = ", ".join(f"{lang} {n}" for lang, n in s.per_language.items() if n)
            parts.append(f"{s.run_set.stage} {s.run_set.role} set {s.run_set.name} shares {s.matched} examples "
                         f"with {self.target}/{self.test_split} ({langs})")  # fmt: skip
        raise ContaminationError(
            "contamination: " + "; ".join(parts) + f"; no exclusion in {self.target}'s task spec covers "
            f"{', '.join(dict.fromkeys(s.run_set.name for s in bad))} (declare one in its exclusions, with the reason)"
        )

    def record(self) -> dict[str, Any]:
        return {
            "target_test": f"{self.target}/{self.test_split}",
            "test_languages": self.test_languages,
            "test_absent": self.test_absent,
            "sets": [s.record() for s in self.sets],
            "excluded": sum(s.removed for s in self.sets),
            "seconds": round(self.seconds, 2),
        }

    def row_fields(self) -> dict[str, Any]:
        """Fields for every result row: the total removed and, per set, ``set:kept/read``."""
        return {
            "audit_excluded": sum(s.removed for s in self.sets),
            "audit_sets": " ".join(
                f"{s.run_set.name}:{s.examples - s.removed}/{s.examples}" for s in self.sets if not s.absent
            ),  # fmt: skip
        }

    def format(self) -> str:
        lines = [f"Contamination audit: against {self.target}/{self.test_split} in "
                 f"{len(self.test_languages)} languages ({sum(self.test_languages.values())} test examples; "
                 f"{self.seconds:.1f} s)"]  # fmt: skip
        if self.test_absent:
            lines.append(f"  test languages without data here: {', '.join(self.test_absent)}")
        for s in self.sets:
            head = f"  {s.run_set.stage:<12} {s.run_set.role:<6} {s.run_set.name:<24}"
            if s.absent:
                lines.append(f"{head} not read ({s.absent})")
                continue
            if s.not_checked:
                lines.append(f"{head} {s.examples:>7} examples, not checked: {s.not_checked}")
                continue
            shared = s.fields.describe()
            fields = f"\n{'':<46}by field: {shared}" if shared else ""
            fields += "".join(f"\n{'':<48}test sentence inside a paragraph: {line}"
                              for line in s.fields.sentence_lines())  # fmt: skip
            if not s.matched and not s.removed:
                lines.append(
                    f"{head} {s.examples:>7} examples, no {'whole-example ' if shared else ''}overlap{fields}"
                )
                continue
            langs = ", ".join(f"{lang} {n}" for lang, n in s.per_language.items() if n)
            by_field = (
                f" (+{s.fields.excluded} by a shared {'/'.join(s.removal.fields)})"
                if s.fields.excluded and s.removal
                else ""
            )
            what = (f"excluded{by_field} -> {s.examples - s.removed} kept ({s.reason})" if s.excluded
                    else "NOT COVERED: the run stops")  # fmt: skip
            lines.append(f"{head} {s.examples:>7} examples, {s.matched} in the test set "
                         f"({langs or '-'}; {s.by_id} by id, {s.by_text} by text): {what}{fields}")  # fmt: skip
        return "\n".join(lines)


def select_on_spec(target_cfg: Any, spec: TaskSpec, train_spec: TaskSpec | None) -> TaskSpec:
    """The spec whose English dev set selects a target stage's checkpoint: the target's own, or with
    ``target.select_on=train_task`` its training task's (jiant's XTREME scripts: MNLI's for XNLI). QA
    targets select on SQuAD dev either way (their dev split is SQuAD's), so they keep their own."""
    if target_cfg.get("select_on") == "train_task" and train_spec is not None and spec.head != "span_qa":
        return train_spec
    return spec


def run_sets(cfg: DictConfig) -> list[RunSet]:
    """Every set a run with (validated) ``cfg`` trains or selects on, in stage order."""
    from xlt.config import MemberConfig
    from xlt.tasks.loading import split_parts
    from xlt.tasks.registry import flatten_mixture, get_mixture, get_task

    sets: list[RunSet] = []

    def add(stage: str, role: str, task: str, split: str | None) -> None:
        for part in split_parts(split or ""):
            item = RunSet(stage, role, task, part)
            if item not in sets:
                sets.append(item)

    inter = cfg.get("intermediate")
    if inter is not None:
        mixture = get_mixture(inter.name)
        if mixture is not None:
            flat = flatten_mixture(mixture)
            only = set(inter.only) if inter.only is not None else None
            for task in flat.tasks:
                if only is not None and task not in only:
                    continue
                member = inter.members.get(task) or MemberConfig()
                spec = get_task(task)
                add("intermediate", "train", task, member.train_split)
                evaluate = member.evaluate if member.evaluate is not None else task in flat.evaluated
                if evaluate:
                    add("intermediate", "select", task, member.dev_split or spec.dev_split)
        else:
            spec = get_task(inter.name)
            add("intermediate", "train", spec.name, inter.train_split)
            add("intermediate", "select", spec.name, inter.dev_split or spec.dev_split)
    target = get_task(cfg.target.name)
    if target.trainable:
        add("target", "train", cfg.target.train_task, cfg.target.train_split)
        selector = select_on_spec(cfg.target, target, get_task(cfg.target.train_task))
        add("target", "select", selector.name, cfg.target.dev_split or selector.dev_split)
    elif target.retrieval == "mining":
        add("target", "select", target.name, target.dev_split)  # BUCC tunes its threshold on dev gold
    return sets


def missing_member(cfg: DictConfig, report: AuditReport) -> str | None:
    """The :func:`member_missing` line for the first mixture member whose set the audit found absent
    (not left out by ``intermediate.only`` or ``intermediate.skip_members``), or None: the run stops
    on it before the probe and any training, not when the member is loaded."""
    from xlt.tasks.loading import member_missing
    from xlt.tasks.registry import get_mixture

    inter = cfg.get("intermediate")
    mixture = get_mixture(inter.name) if inter is not None else None
    if mixture is None:
        return None
    left_out = set(inter.get("skip_members") or [])
    for s in report.sets:
        task = s.run_set.task
        if (s.run_set.stage == "intermediate" and s.absent and task not in left_out
                and (inter.only is None or task in inter.only)):  # fmt: skip
            return member_missing(mixture.name, task, s.absent)
    return None


def mixture_label(cfg: DictConfig, report: AuditReport) -> tuple[str, list[str]] | None:
    """For a mixture intermediate stage: (its label, the members it trains). A member is left out
    (xlt/data/mixture.py) when ``intermediate.only`` omits it or its training or dev files are absent
    (the audit's ``absent`` sets); the label is then the mixture's name minus each left-out member
    (``all9-ccg``), so that its rows never pass for the full mixture. None for a single task."""
    from xlt.tasks.registry import flatten_mixture, get_mixture

    inter = cfg.get("intermediate")
    mixture = get_mixture(inter.name) if inter is not None else None
    if mixture is None:
        return None
    absent = {s.run_set.task for s in report.sets if s.run_set.stage == "intermediate" and s.absent}
    only = set(inter.only) if inter.only is not None else None
    tasks = flatten_mixture(mixture).tasks
    trained = [t for t in tasks if t not in absent and (only is None or t in only)]
    return "".join([mixture.name, *(f"-{t}" for t in tasks if t not in trained)]), trained


def _index(spec: TaskSpec, source: str, data_dir: Path | None
           ) -> tuple[Index, dict[str, int], list[str], FieldIndex]:  # fmt: skip
    """Per test language: its example ids and text digests; the example counts; languages without
    data; and the test set's field index (xlt/audit_fields.py)."""
    from xlt.tasks.loading import MissingDataError, load_split

    index: Index = {}
    counts: dict[str, int] = {}
    absent: list[str] = []
    fields = FieldIndex(MIN_TEXT_CHARS)
    for lang in spec.languages:
        try:
            loaded = load_split(spec, spec.test_split, lang, source, data_dir)
        except MissingDataError:
            absent.append(lang)
            continue
        ids = {i for i in map(example_id, loaded.examples) if i is not None}
        keys = {k for ex in loaded.examples for k in text_keys(ex)}
        index[lang] = (ids, keys)
        counts[lang] = len(loaded.examples)
        fields.add(lang, loaded.examples)
    return index, counts, absent, fields


def audit(cfg: DictConfig, source: str, data_dir: Path | None) -> AuditReport:
    """Compare every set of :func:`run_sets` with every test language of the target (see module doc)."""
    from xlt.tasks.loading import MissingDataError, load_split
    from xlt.tasks.registry import get_task

    start = time.perf_counter()
    target = get_task(cfg.target.name)
    index, counts, absent, field_index = _index(target, source, data_dir)
    covered = {name: ex for ex in target.exclusions for name in ex.sets}
    results = []
    done: dict[str, SetAudit] = {}  # a set read by both stages (squad/train) is compared once
    for run_set in run_sets(cfg):
        if run_set.name in done:
            results.append(replace(done[run_set.name], run_set=run_set))
            continue
        result = SetAudit(run_set)
        results.append(result)
        done[run_set.name] = result
        try:
            loaded = load_split(get_task(run_set.task), run_set.split, "en", source, data_dir)
        except MissingDataError as err:
            result.absent = str(err)
            continue
        result.origin, result.examples = loaded.origin, len(loaded.examples)
        if not index:
            result.not_checked = "no test data"
            continue
        exclusion = covered.get(run_set.name)
        checker = FieldChecker(field_index, exclusion.fields if exclusion is not None else ())
        ids: set[str] = set()
        keys: set[bytes] = set()
        per_language = dict.fromkeys(index, 0)
        for ex in loaded.examples:
            ident = example_id(ex)
            ex_keys = text_keys(ex)
            result.short += not ex_keys
            hit_id = hit_text = False
            for lang, (test_ids, test_keys) in index.items():
                lang_id = ident is not None and ident in test_ids
                lang_text = any(k in test_keys for k in ex_keys)
                if lang_id or lang_text:
                    per_language[lang] += 1
                hit_id, hit_text = hit_id or lang_id, hit_text or lang_text
            checker.check(ex, hit_id or hit_text)
            if hit_id or hit_text:
                result.matched += 1
                result.by_id += hit_id
                result.by_text += hit_text
                if ident is not None:
                    ids.add(ident)
                    result.matched_ids.append(ident)
                keys.update(ex_keys)
        result.per_language = {lang: n for lang, n in per_language.items() if n}
        result.fields = checker.result
        if (result.matched or result.fields.excluded) and exclusion is not None:
            result.excluded, result.reason = True, exclusion.reason
            result.removal = Removal(
                run_set.name, frozenset(ids), frozenset(keys), f"{target.name}/{target.test_split}",
                exclusion.fields, frozenset(result.fields.keys),
            )  # fmt: skip
    report = AuditReport(target.name, target.test_split, counts, absent, results)
    report.seconds = time.perf_counter() - start
    return report


def compose(overrides: Sequence[str]) -> DictConfig:
    """The validated config ``python -m xlt.train <overrides>`` would run."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from xlt.config import CONF_DIR, validate

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(overrides))
    return validate(cfg)


def main(argv: Iterable[str] | None = None) -> int:
    from xlt.console import run_cli

    return run_cli(lambda: _main(argv))  # any error: one line on stderr, exit 2


def _main(argv: Iterable[str] | None) -> int:
    from hydra.errors import HydraException

    from xlt.config import ConfigError
    from xlt.console import cli_parser
    from xlt.tasks import hub
    from xlt.tasks.loading import resolve_source

    parser = cli_parser(
        "python -m xlt.audit",
        "Check every set a run would train or select on against every test set of its target\n"
        "(the audit xlt.train runs first) and print the report. Exit 1 on an overlap no exclusion covers.",
        [
            "xlt-audit +target=xnli target.train_task=snli target.train_split=dev",
            "python -m xlt.audit +intermediate=squad +target=xquad   # a documented overlap, excluded",
        ],
    )
    parser.add_argument("overrides", nargs="*", help="the overrides of xlt.train (group=option, key=value)")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv)).overrides
    try:
        cfg = compose(args)
        source, data_dir = resolve_source(cfg.data.source, cfg.data.dir)
        hub.configure_from(cfg.data)  # data.hub_mirror, data.hub_revisions: as a run reads
        report = audit(cfg, source, data_dir)
    except (ConfigError, DataError, FileNotFoundError, HydraException) as err:
        from xlt.console import report_error

        return report_error(err)  # one line (Hydra's own message has several, with the choices)
    print(report.format())
    if report.violations:
        try:
            report.check()
        except ContaminationError as err:
            print(str(err), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
