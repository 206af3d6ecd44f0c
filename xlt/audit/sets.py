"""The sets a run trains or selects on, checked against every test set of its target, in every language
of the target (the contamination audit, before any training; ``python -m xlt.audit``: cli.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from xlt.audit.fields import FieldChecker, FieldIndex
from xlt.audit.keys import MIN_TEXT_CHARS, Removal, example_id, text_keys
from xlt.audit.report import AuditReport, RunSet, SetAudit
from xlt.schema import MemberConfig
from xlt.tasks.loading import MissingDataError, load_split, member_missing, split_parts
from xlt.tasks.registry import flatten_mixture, get_mixture, get_task
from xlt.tasks.spec import TaskSpec

log = logging.getLogger(__name__)

Index = dict[str, tuple[set[str], set[bytes]]]  # test language -> (example ids, text digests)


def select_on_spec(target_cfg: Any, spec: TaskSpec, train_spec: TaskSpec | None) -> TaskSpec:
    """The spec whose English dev set selects a target stage's checkpoint: the target's own, or with
    ``target.select_on=train_task`` its training task's (jiant's XTREME scripts: MNLI's for XNLI). QA
    targets select on SQuAD dev either way (their dev split is SQuAD's), so they keep their own."""
    if target_cfg.get("select_on") == "train_task" and train_spec is not None and spec.head != "span_qa":
        return train_spec
    return spec


def run_sets(cfg: DictConfig) -> list[RunSet]:
    """Every set a run with (validated) ``cfg`` trains or selects on, in stage order."""

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


@dataclass(frozen=True)
class AuditScope:
    """What the audit of a run compares, decided from its config once (the run's plan carries it)."""

    target: str  # the target task, whose test sets every run set is compared with
    sets: tuple[RunSet, ...]  # :func:`run_sets`
    mixture: str | None  # the intermediate stage's mixture, if it is one
    only: tuple[str, ...] | None  # intermediate.only
    skip_members: tuple[str, ...]  # intermediate.skip_members


def audit_scope(cfg: DictConfig) -> AuditScope:
    """The :class:`AuditScope` of a run with (validated) ``cfg``."""

    inter = cfg.get("intermediate")
    mixture = get_mixture(inter.name) if inter is not None else None
    return AuditScope(
        cfg.target.name,
        tuple(run_sets(cfg)),
        mixture.name if mixture is not None else None,
        tuple(inter.only) if inter is not None and inter.only is not None else None,
        tuple(inter.get("skip_members") or []) if inter is not None else (),
    )


def missing_member(scope: AuditScope, report: AuditReport) -> str | None:
    """The :func:`member_missing` line for the first mixture member whose set the audit found absent
    (not left out by ``intermediate.only`` or ``intermediate.skip_members``), or None: the run stops
    on it before the probe and any training, not when the member is loaded."""

    if scope.mixture is None:
        return None
    left_out = set(scope.skip_members)
    for s in report.sets:
        task = s.run_set.task
        if (
            s.run_set.stage == "intermediate"
            and s.absent
            and task not in left_out
            and (scope.only is None or task in scope.only)
        ):
            return member_missing(scope.mixture, task, s.absent)
    return None


def mixture_label(scope: AuditScope, report: AuditReport) -> tuple[str, list[str]] | None:
    """For a mixture intermediate stage: (its label, the members it trains). A member is left out
    (xlt/data/mixture.py) when ``intermediate.only`` omits it or its training or dev files are absent
    (the audit's ``absent`` sets); the label is then the mixture's name minus each left-out member
    (``all9-ccg``), so that its rows never pass for the full mixture. None for a single task."""

    mixture = get_mixture(scope.mixture) if scope.mixture is not None else None
    if mixture is None:
        return None
    absent = {s.run_set.task for s in report.sets if s.run_set.stage == "intermediate" and s.absent}
    only = set(scope.only) if scope.only is not None else None
    tasks = flatten_mixture(mixture).tasks
    trained = [t for t in tasks if t not in absent and (only is None or t in only)]
    return "".join([mixture.name, *(f"-{t}" for t in tasks if t not in trained)]), trained


def _index(
    spec: TaskSpec, source: str, data_dir: Path | None
) -> tuple[Index, dict[str, int], list[str], FieldIndex]:
    """Per test language: its example ids and text digests; the example counts; languages without
    data; and the test set's field index (xlt/audit/fields.py)."""

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


def _compare(
    examples: Iterable[Any], index: Index, checker: FieldChecker, result: SetAudit
) -> tuple[set[str], set[bytes], dict[str, int]]:
    """Each example against every test language's ids and text keys, counted into ``result``: the
    matched ids, the matched text keys and the matches per test language."""
    ids: set[str] = set()
    keys: set[bytes] = set()
    per_language = dict.fromkeys(index, 0)
    for ex in examples:
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
    return ids, keys, per_language


def audit(scope: AuditScope, source: str, data_dir: Path | None) -> AuditReport:
    """Compare every set of ``scope`` (:func:`run_sets`) with every test language of its target (see
    module doc)."""

    start = time.perf_counter()
    target = get_task(scope.target)
    index, counts, absent, field_index = _index(target, source, data_dir)
    covered = {name: ex for ex in target.exclusions for name in ex.sets}
    results = []
    done: dict[str, SetAudit] = {}  # a set read by both stages (squad/train) is compared once
    for run_set in scope.sets:
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
        ids, keys, per_language = _compare(loaded.examples, index, checker, result)
        result.per_language = {lang: n for lang, n in per_language.items() if n}
        result.fields = checker.result
        if (result.matched or result.fields.excluded) and exclusion is not None:
            result.excluded, result.reason = True, exclusion.reason
            result.removal = Removal(
                run_set.name,
                frozenset(ids),
                frozenset(keys),
                f"{target.name}/{target.test_split}",
                exclusion.fields,
                frozenset(result.fields.keys),
            )
    report = AuditReport(target.name, target.test_split, counts, absent, results)
    report.seconds = time.perf_counter() - start
    return report
