"""The typed description of a task: one place for its languages, files, head, metric and training source."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Example = dict[str, Any]
# A raw-file reader: (path, language) -> examples in the head kind's field layout.
Reader = Callable[[Path, str], Iterator[Example]]
# What a hub mapper returns for a row of another language when one config mixes languages
# (TyDiQA): counted as filtered by language, not as dropped data.
OTHER_LANGUAGE: dict[str, Any] = {"_other_language": True}
# A hub-row mapper: (row, language) -> example, or None to drop a row the task defines as unlabelled.
HubMapper = Callable[[Mapping[str, Any], str], "Example | None"]


@dataclass(frozen=True)
class HeadKind:
    """The facts of one head kind besides its featurizer and head classes (their registries).

    ``min_seq_length``: the shortest max_seq_length it can use, in tokens, and ``needs``: what that
    length must hold (said when a length is too short). ``prediction_format``: how a task's
    per-example predictions are written in XTREME's submission layout (xlt/results/submission.py);
    a retrieval task's comes from its retrieval kind (``RETRIEVAL_KINDS``).
    """

    min_seq_length: int
    needs: str
    prediction_format: str = ""


# The one table of head kinds. A sentence pair (classification, multiple choice) needs its special
# tokens (4 for XLM-R) and a few tokens of each text; a tagging window its 2 special tokens and some
# words; span QA its question (cut at 64 tokens), the pair's special tokens and a context window at
# least one doc stride (128) long (xlt/data/features_qa.py).
HEAD_KINDS = {
    "classification": HeadKind(
        min_seq_length=16,
        needs="a pair's special tokens and a few tokens of each text",
        prediction_format="labels",
    ),
    "multiple_choice": HeadKind(
        min_seq_length=16,
        needs="a context-choice pair's special tokens and a few tokens of each",
        prediction_format="labels",
    ),
    "tagging": HeadKind(
        min_seq_length=8,
        needs="the special tokens and some words per window",
        prediction_format="tags",
    ),
    "span_qa": HeadKind(
        min_seq_length=64 + 4 + 128,
        needs="a question of up to 64 tokens, the special tokens and a context window of one doc stride, 128",
        prediction_format="qa",
    ),
    "retrieval": HeadKind(min_seq_length=8, needs="the special tokens and some words"),
}
# Retrieval kinds (the evaluators of xlt/evaluation/; tests/test_evaluation.py checks both agree)
# and the prediction format of each.
RETRIEVAL_KINDS = {"top1": "index", "mining": "pairs"}
# The file suffix of each prediction format (evaluate.py reads test-{lang}.json for QA, .tsv otherwise).
FORMAT_SUFFIX = {"labels": "tsv", "tags": "tsv", "qa": "json", "index": "tsv", "pairs": "tsv"}

# XTREME's scorers (evaluate.py ``METRIC_FUNCTION``): ``seqeval`` is chunk F1/precision/recall with
# seqeval 0.0.12 chunking (also for UD-POS); ``squad`` the SQuAD v1.1 script (English normalisation
# for every language); ``mlqa`` the MLQA script with language-specific normalisation.
XtremeMetric = Literal["accuracy", "seqeval", "bucc_f1", "squad", "mlqa"]


class DataError(ValueError):
    """Bad input data: the message names the file/field/record and what was expected."""


@dataclass(frozen=True)
class RawFile:
    """One original on-disk layout of a split: a path pattern under the data directory and its format.

    ``pattern`` may use ``{lang}`` (the ISO code the task uses) and ``{lang3}`` (the task's own code
    for that language, e.g. Tatoeba's ``deu``). ``format`` names a reader in the format registry.
    """

    pattern: str
    format: str

    def path(self, data_dir: Path, lang: str, lang3: str) -> Path:
        return data_dir / self.pattern.format(lang=lang, lang3=lang3)


@dataclass(frozen=True)
class HubFile:
    """Where a split lives on the Hugging Face hub: dataset id, config, split and a row mapper."""

    path: str
    name: str | None
    split: str
    mapper: str  # key in the hub-mapper registry
    lang_filter: str | None = None  # column to filter on when one config mixes languages
    # The revision to read (None: the repo's default branch; data.hub_revisions pins one per repo);
    # "refs/convert/parquet" reads the hub's parquet export of a loading-script repo.
    revision: str | None = None


@dataclass(frozen=True)
class Exclusion:
    """A documented overlap between this target's test set and sets a run may train or select on.

    ``sets`` names them as ``task/split`` (any task, any stage: ``squad/dev`` is read by the
    intermediate stage ``squad``, by the ``all9`` mixture, and as ``xquad/squad_dev`` by the target
    stage). The contamination audit (xlt/audit/sets.py) finds the overlapping examples (by id and by
    normalised text); with an exclusion they are removed from that set wherever the run reads it,
    and recorded; without one, the overlap stops the run.
    """

    sets: tuple[str, ...]
    reason: str
    # Text fields (xlt/audit/fields.py: "context", "question", ...) whose sharing with a test text
    # also removes an example from these sets: XQuAD's paragraphs carry SQuAD v2.0 questions of their own.
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Xtreme:
    """How XTREME (2020) scores one of its nine tasks: the task's group in evaluate.py's
    ``XTREME_GROUP2TASK`` and its scorer. Its languages are the spec's ``languages``, in evaluate.py's
    order (per-task averages are summed in that order); xlt/metrics/xtreme.py builds its tables from these."""

    group: Literal["classification", "tagging", "qa", "retrieval"]
    metric: XtremeMetric


@dataclass(frozen=True)
class TaskSpec:
    """Everything about one task. Config files name a task; they never restate these facts."""

    name: str
    description: str
    head: str  # key in the head registry ("classification", ...) or "retrieval" (no head, no training)
    metrics: tuple[str, ...]  # metric names as reported, e.g. ("acc",); the first selects checkpoints
    languages: tuple[str, ...]
    raw: Mapping[str, tuple[RawFile, ...]]  # split -> candidate layouts, first existing one wins
    hub: Mapping[str, HubFile] = field(default_factory=dict)  # split -> hub location ({lang}, {lang3})
    label_names: tuple[str, ...] = ()
    label_aliases: Mapping[str, str] = field(default_factory=dict)
    lang3: Mapping[str, str] = field(default_factory=dict)  # ISO code -> the dataset's own code
    train_task: str | None = None  # targets: the XTREME English training source (xnli -> mnli)
    dev_split: str = "dev"  # model selection split (English only for targets)
    # Its dev split exists in its other languages too (XNLI, PAWS-X, PAN-X, UD-POS): what
    # target.eval_dev_languages scores, for analysis only (xlt/evaluation/analysis_dev.py); False where the
    # dev split is English whatever the language (QA's SQuAD dev) or there is none.
    dev_in_other_languages: bool = False
    test_split: str = "test"  # zero-shot evaluation split
    max_seq_length: int = 128
    # The shortest max_seq_length the task can run with (0: its head kind's, HEAD_KINDS); checked
    # by config validation before any data is read.
    min_seq_length: int = 0
    roles: tuple[str, ...] = ("intermediate", "target")
    citation: str = ""
    # Span QA: the official scorer of each split's data, by split name ("squad": SQuAD v1.1, which
    # XTREME uses for XQuAD and TyDiQA; "squad_v2"; "mlqa": MLQA's per-language rules). A split not
    # listed is scored as "squad" (MLQA's selection split squad_dev is SQuAD's dev, scored like SQuAD).
    qa_scoring: Mapping[str, str] = field(default_factory=dict)
    # Retrieval targets (head "retrieval"): "top1" (Tatoeba: English queries, nearest neighbour) or
    # "mining" (BUCC: margin-scored bitext mining with a threshold tuned on dev gold).
    retrieval: str = ""
    # Why the hub copy cannot serve this task (said in one line instead of loading it); "" when it can.
    hub_unusable: str = ""
    # Known overlaps of this task's test set with sets a run trains or selects on, removed before
    # training (XQuAD's test questions are SQuAD v1.1 dev questions); any other overlap stops the run.
    exclusions: tuple[Exclusion, ...] = ()
    # One of XTREME's nine tasks: how evaluate.py scores it (None: not an XTREME task).
    xtreme: Xtreme | None = None
    # Published English training-set sizes (python -m xlt.plan): split (one part of a '+'-joined
    # split) -> (examples, source). A split not listed is counted in the data directory when there.
    # Numbers from ../shared/docs/reference.md (the HF dataset cards and jiant/XTREME files it cites).
    train_sizes: Mapping[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def trainable(self) -> bool:
        return self.head != "retrieval"

    @property
    def shortest_seq_length(self) -> int:
        """The smallest usable ``max_seq_length`` (``min_seq_length``, else the head kind's)."""
        kind = HEAD_KINDS.get(self.head)
        return self.min_seq_length or (kind.min_seq_length if kind else 8)

    @property
    def prediction_format(self) -> str:
        """How its test predictions are written: by retrieval kind, else by head kind."""
        kind = HEAD_KINDS.get(self.head)
        found = RETRIEVAL_KINDS.get(self.retrieval) if self.retrieval else kind and kind.prediction_format
        if not found:
            raise KeyError(
                f"task {self.name}: no prediction format for {self.retrieval or self.head!r} "
                "(xlt.tasks.spec.HEAD_KINDS, RETRIEVAL_KINDS)"
            )
        return found

    @property
    def prediction_suffix(self) -> str:
        """The extension of its prediction (and XTREME label) files: ``json`` or ``tsv``."""
        return FORMAT_SUFFIX[self.prediction_format]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def label_id(self, label: str, where: str) -> int:
        """Map a raw label string to its index; an unknown label is a DataError naming ``where``."""
        label = self.label_aliases.get(label, label)
        try:
            return self.label_names.index(label)
        except ValueError:
            raise DataError(
                f"{where}: unknown label {label!r} for task {self.name} (expected one of {list(self.label_names)})"
            ) from None

    def code(self, lang: str) -> str:
        return self.lang3.get(lang, lang)


@dataclass(frozen=True)
class MixtureSpec:
    """Several tasks trained together in one stage (multi-task, examples-proportional sampling).

    ``members`` names tasks or other mixtures; a nested mixture is flattened into its tasks, and a
    task listed twice is trained once. Every member has its own head, named after it, except where
    ``shared_heads`` maps a head name to the members that share it (ANLI+'s NLI head). ``evaluated``
    names the members scored on dev (None: all); the stage selects checkpoints on the mean of their
    primary dev metrics. Sampling settings (cap, temperature, steps) are run settings: config.
    """

    name: str
    description: str
    members: tuple[str, ...]
    shared_heads: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    evaluated: tuple[str, ...] | None = None
    roles: tuple[str, ...] = ("intermediate",)
    citation: str = ""
