"""Dev sets a target stage scores after selection and never selects on.

- **The held-out English dev** (split ``dev_heldout``): the English dev examples *outside* the
  selection subset (xlt/data/selection.py draws ``val_subset`` of them with the run's seed). The
  selection subset's score of the selected checkpoint is a maximum over many validations of the same
  examples, biased upwards; the held-out score is not, so the dev choice of an intermediate task
  (xlt/results/choice.py) ranks on it where every compared run has one. Scored wherever the dev set has
  more examples than the subset (``target.eval_dev_heldout``, on by default), capped at
  ``max_eval_examples`` like every evaluation set.
- **Other languages' dev sets** (split ``dev``, one row per language; ``target.eval_dev_languages``:
  false (default), true (every language of the task) or a list): for analysis only (a gap on dev),
  where the task's dev split exists in other languages (``TaskSpec.dev_in_other_languages``). Their
  rows carry ``ANALYSIS_NOTE``; the English dev row the checkpoint was selected on is unchanged.

Both are scored with the test sets, on the selected weights: validation (selection) never sees them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from xlt.data.datamodule import DataSettings, EvalSet, load_examples, load_features, selection_cap
from xlt.data.features import featurize
from xlt.data.selection import selection_indices
from xlt.results.rows import ResultRow, eval_rows
from xlt.tasks.loading import MissingDataError
from xlt.tasks.spec import TaskSpec

log = logging.getLogger(__name__)

HELDOUT_SPLIT = "dev_heldout"
ANALYSIS_NOTE = "analysis only: scored after selection, never selected on (target.eval_dev_languages)"
HELDOUT_NOTE = "English dev examples outside the selection subset, on the selected checkpoint"


def dev_languages(option: Any, spec: TaskSpec) -> list[str]:
    """The non-English languages ``target.eval_dev_languages`` asks for (false/null: none; true: every
    language of the task but English; a list: those, in the task's order)."""
    if option is None or option is False:
        return []
    if option is True:
        return [lang for lang in spec.languages if lang != "en"]
    wanted = set(option)
    return [lang for lang in spec.languages if lang in wanted and lang != "en"]


def heldout_set(
    task: TaskSpec,
    source: TaskSpec,
    split: str,
    settings: DataSettings,
    max_len: int,
    max_eval: int | None,
    val_subset: int | None,
) -> EvalSet | None:
    """The English ``split`` of ``source`` (scored as ``task``'s) less its selection subset, the first
    ``max_eval`` of them; None where nothing is left out of the subset or the split is '+'-joined."""
    cap = selection_cap(max_eval, val_subset)
    if cap is None or "+" in split:
        return None
    loaded = load_examples(source, split, "en", settings, None)
    examples = loaded.examples
    if settings.seed is not None:
        chosen = set(selection_indices(examples, cap, settings.seed, f"{source.name}/{split}"))
    else:  # no seed: the stage read the first ``cap``
        chosen = set(range(min(cap, len(examples))))
    rest = [ex for i, ex in enumerate(examples) if i not in chosen]
    if max_eval is not None:
        rest = rest[:max_eval]
    if not rest:
        return None
    key = {
        "task": source.name,
        "split": f"{split}:heldout",
        "lang": "en",
        "data": f"{loaded.fingerprint}|heldout:{settings.seed}:{cap}:{max_eval}",
        "tokenizer": settings.tokenizer_id,
    }
    desc = f"{source.name} {split} en (held out of selection)"
    features = featurize(rest, task.head, settings.tokenizer, max_len, settings.cache_dir, key, desc=desc)
    log.info(
        "%s: %d English dev examples outside the selection subset of %d scored as %s",
        task.name,
        len(rest),
        cap,
        HELDOUT_SPLIT,
    )
    return EvalSet(task.name, HELDOUT_SPLIT, "en", features, loaded.origin, rest, source_split=split)


def analysis_sets(
    spec: TaskSpec, dev_spec: TaskSpec, options: Any, settings: DataSettings
) -> tuple[list[EvalSet], list[str]]:
    """A target stage's analysis sets (module docstring) and one line per language left out.
    ``options``: the stage's plan of them (xlt.orchestration.plan_sections.AnalysisPlan)."""
    split = options.dev_split or dev_spec.dev_split
    max_len, max_eval = options.max_seq_length, options.max_eval_examples
    sets: list[EvalSet] = []
    skipped: list[str] = []
    if split and options.heldout:
        held = heldout_set(spec, dev_spec, split, settings, max_len, max_eval, options.val_subset)
        if held is not None:
            sets.append(held)
    own_split = options.dev_split or spec.dev_split
    for lang in dev_languages(options.dev_languages, spec):
        try:
            feats, origin, examples = load_features(
                spec, spec.head, own_split, lang, settings, max_len, max_eval
            )
        except MissingDataError as err:
            skipped.append(f"{err} (target.eval_dev_languages: dev {lang} not scored)")
            continue
        sets.append(EvalSet(spec.name, "dev", lang, feats, origin, examples, source_split=own_split))
    return sets, skipped


def analysis_eval_rows(
    stage: str,
    val: Sequence[EvalSet],
    test: Sequence[EvalSet],
    analysis: Sequence[EvalSet],
    scores: Mapping[str, Mapping[str, float]],
    parts: Mapping[str, Sequence[tuple[str, int]]],
    selection_key: str | None,
) -> list[ResultRow]:
    """A stage's result rows: dev (the English selection rows, unchanged, and with
    ``eval_dev_languages`` the other languages' and the dev average, noted as analysis only), test,
    and the held-out English dev (``HELDOUT_SPLIT``, noted)."""
    other_dev = [s for s in analysis if s.split == "dev"]
    heldout = [s for s in analysis if s.split == HELDOUT_SPLIT]
    rows: list[ResultRow] = []
    if val:
        dev = eval_rows(stage, "dev", [*val, *other_dev], scores, parts, selection_key)
        if other_dev:
            dev = [
                r if r.language == "en" or r.metric == "selection" else replace(r, note=ANALYSIS_NOTE)
                for r in dev
            ]
        rows.extend(dev)
    if test:
        rows.extend(eval_rows(stage, "test", test, scores, parts))
    if heldout:
        rows.extend(
            replace(r, note=HELDOUT_NOTE) for r in eval_rows(stage, HELDOUT_SPLIT, heldout, scores, {})
        )
    return rows
