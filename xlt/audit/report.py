"""What the contamination audit (:mod:`xlt.audit`) reports: each set a run trains or selects on
(:class:`RunSet`), what comparing it with the target's test sets found (:class:`SetAudit`), and the
whole report (:class:`AuditReport`: its lines, its record in the run's files, the one-line
:class:`ContaminationError` when an overlap has no declared exclusion).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xlt.audit.fields import FieldAudit
from xlt.audit.keys import Removal
from xlt.tasks.spec import DataError


class ContaminationError(DataError):
    """A set the run trains or selects on shares examples with a test set, and no exclusion covers it."""


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
        rec: dict[str, Any] = {
            "stage": s.stage,
            "role": s.role,
            "set": s.name,
            "origin": self.origin,
            "examples": self.examples,
            "overlap": self.matched,
            "by_id": self.by_id,
            "by_text": self.by_text,
            "short": self.short,
            "overlap_by_language": self.per_language,
        }
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
            parts.append(
                f"{s.run_set.stage} {s.run_set.role} set {s.run_set.name} shares {s.matched} examples "
                f"with {self.target}/{self.test_split} ({langs})"
            )
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
            ),
        }

    def format(self) -> str:
        lines = [
            f"Contamination audit: against {self.target}/{self.test_split} in "
            f"{len(self.test_languages)} languages ({sum(self.test_languages.values())} test examples; "
            f"{self.seconds:.1f} s)"
        ]
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
            fields += "".join(
                f"\n{'':<48}test sentence inside a paragraph: {line}" for line in s.fields.sentence_lines()
            )
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
            what = (
                f"excluded{by_field} -> {s.examples - s.removed} kept ({s.reason})"
                if s.excluded
                else "NOT COVERED: the run stops"
            )
            lines.append(
                f"{head} {s.examples:>7} examples, {s.matched} in the test set "
                f"({langs or '-'}; {s.by_id} by id, {s.by_text} by text): {what}{fields}"
            )
        return "\n".join(lines)
