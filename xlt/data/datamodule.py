"""One LightningDataModule per stage: English training set, English dev for selection, one test
dataloader per language. Loading and featurisation happen in :func:`prepare_stage_data`, before
the Trainer starts, so missing languages are known (and reported) up front."""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import datasets
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

from xlt.audit.keys import Removal, apply_removal
from xlt.data.features import Collator, featurize, load_split_cached, tokenizer_fingerprint
from xlt.data.sampling import LengthGroupedBatchSampler, MultiTaskBatchSampler, ResumableDataLoader
from xlt.data.selection import draw_selection
from xlt.metrics.keys import set_key
from xlt.tasks.loading import Loaded, MissingDataError, load_split, split_parts
from xlt.tasks.spec import DataError, Example, TaskSpec

log = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """One evaluation dataloader: a task's split in one language."""

    task: str
    split: str
    lang: str
    features: datasets.Dataset
    origin: str
    examples: list[Example] = field(default_factory=list, repr=False)  # raw, for example-level metrics
    # A part of a '+'-joined split scored on its own (ANLI's dev_r1): the whole split's name ("dev").
    part_of: str | None = None
    # The task's split the examples were read from, when ``split`` names its role instead (MLQA's
    # "dev" set is read from its split "squad_dev"); "" when it is ``split`` itself.
    source_split: str = ""

    @property
    def data_split(self) -> str:
        """The task split the examples come from (what ``TaskSpec.qa_scoring`` is keyed by)."""
        return self.source_split or self.split

    @property
    def key(self) -> str:
        return set_key(self.split, self.task, self.lang)

    @property
    def overall_key(self) -> str:
        """The key of the whole split: this set's own key, or its union's for a part."""
        return set_key(self.part_of or self.split, self.task, self.lang)

    def __len__(self) -> int:
        """Examples, not features: QA and tagging windows make several features of one example."""
        return len(self.examples) or len(self.features)


@dataclass
class StageData:
    train: datasets.Dataset | None
    train_origin: str
    val: list[EvalSet]
    test: list[EvalSet]
    skipped: list[str] = field(default_factory=list)  # one line per language with no data
    mixture: MixtureTrain | None = None  # a multi-task stage's training sets (then ``train`` is None)
    # Scored with the test sets, after selection, never selected on: the English dev examples outside
    # the selection subset and other languages' dev sets (xlt/evaluation/analysis_dev.py).
    analysis: list[EvalSet] = field(default_factory=list)


@dataclass
class MixtureTrain:
    """The training side of a mixture stage: one featurised set per member task, in sampling order."""

    name: str
    tasks: list[str]
    features: list[datasets.Dataset]
    origins: list[str]
    head_of: dict[str, str]  # task -> head name (tasks may share one)
    probabilities: list[float]
    steps_per_epoch: int  # optimizer steps
    dropped: dict[str, int] = field(default_factory=dict)  # rows without a gold label, per task
    specs: dict[str, TaskSpec] = field(default_factory=dict)  # task -> its spec (the module's task facts)


class MixtureDataset(Dataset[dict[str, Any]]):
    """The members' feature sets concatenated; each row is tagged with its task's index (``task_id``)."""

    def __init__(self, features: list[datasets.Dataset]) -> None:
        self.parts = [f.select_columns([c for c in f.column_names if c != "length"]) for f in features]
        self.starts = [0]
        for part in self.parts:
            self.starts.append(self.starts[-1] + len(part))

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, index: int) -> dict[str, Any]:
        task = bisect.bisect_right(self.starts, index) - 1
        row = dict(self.parts[task][index - self.starts[task]])
        row["task_id"] = task
        return row


@dataclass
class DataSettings:
    source: str
    data_dir: Path | None
    cache_dir: Path | None
    tokenizer: PreTrainedTokenizerBase
    tokenizer_id: str = ""
    # ``task/split`` -> what the contamination audit's declared exclusions remove from it (xlt/audit/sets.py)
    exclude: dict[str, Removal] = field(default_factory=dict)
    # The run's seed: a capped dev set is then drawn at random with it (xlt/data/selection.py), and
    # each draw is recorded here until the stage that used it takes it (``pop_selections``).
    seed: int | None = None
    selections: dict[str, dict] = field(default_factory=dict)

    def pop_selections(self) -> dict[str, dict]:
        drawn, self.selections = self.selections, {}
        return drawn

    def __post_init__(self) -> None:
        if not self.tokenizer_id:
            self.tokenizer_id = tokenizer_fingerprint(self.tokenizer)


def load_features(
    spec: TaskSpec,
    head_kind: str,
    split: str,
    lang: str,
    settings: DataSettings,
    max_len: int,
    limit: int | None,
) -> tuple[datasets.Dataset, str, list[Example]]:
    features, loaded = load_and_featurize(spec, head_kind, split, lang, settings, max_len, limit)
    return features, loaded.origin, loaded.examples


def load_and_featurize(
    spec: TaskSpec,
    head_kind: str,
    split: str,
    lang: str,
    settings: DataSettings,
    max_len: int,
    limit: int | None,
    draw: bool = False,
) -> tuple[datasets.Dataset, Loaded]:
    """Features of one split plus what was loaded (origin, raw examples, rows dropped as unlabelled).
    ``draw``: ``limit`` examples are drawn at random with ``settings.seed`` (xlt/data/selection.py)
    instead of the first ones."""
    draw = draw and limit is not None and settings.seed is not None
    loaded = load_examples(spec, split, lang, settings, None if draw else limit)
    if draw:
        name = f"{spec.name}/{split}"
        loaded, settings.selections[name] = draw_selection(
            loaded, cast(int, limit), cast(int, settings.seed), name
        )
    if loaded.dropped:
        log.info(
            "%s %s %s: dropped %d rows without a gold label (as the task defines)",
            spec.name,
            split,
            lang,
            loaded.dropped,
        )
    key = {
        "task": spec.name,
        "split": split,
        "lang": lang,
        "data": loaded.fingerprint,
        "tokenizer": settings.tokenizer_id,
    }
    features = featurize(
        loaded.examples,
        head_kind,
        settings.tokenizer,
        max_len,
        settings.cache_dir,
        key,
        desc=f"{spec.name} {split} {lang}",
    )
    return features, loaded


def load_examples(spec: TaskSpec, split: str, lang: str, settings: DataSettings, limit: int | None) -> Loaded:
    """One split's examples as a stage reads them: less what the audit's declared exclusions remove,
    then cut to ``limit``."""
    removal = settings.exclude.get(f"{spec.name}/{split}")
    if removal is not None:
        return _without(load_split(spec, split, lang, settings.source, settings.data_dir), removal, limit)
    return load_split_cached(spec, split, lang, settings.source, settings.data_dir, limit, settings.cache_dir)


def _without(loaded: Loaded, removal: Removal, limit: int | None) -> Loaded:
    """``loaded`` minus the examples a declared exclusion removes (then cut to ``limit``)."""
    kept = apply_removal(loaded.examples, removal)
    log.info(
        "%s: %d of %d examples left out, as the audit's exclusion says (they are in %s)",
        removal.name,
        len(loaded.examples) - len(kept),
        len(loaded.examples),
        removal.because,
    )
    if not kept:
        raise DataError(f"{loaded.origin}: every example is also in {removal.because}; nothing left")
    kept = kept[:limit] if limit is not None else kept
    fingerprint = f"{loaded.fingerprint}|minus:{removal.fingerprint}|limit={limit}"
    return Loaded(kept, loaded.origin, loaded.dropped, fingerprint)


def selection_cap(max_eval: int | None, val_subset: int | None) -> int | None:
    """How many examples of each English dev set a stage reads to select its checkpoint: ``val_subset``
    (jiant's ``eval_subset_num``), within the ``max_eval`` cap, drawn at random with the run's seed
    (xlt/data/selection.py)."""
    caps = [c for c in (max_eval, val_subset) if c is not None]
    return min(caps) if caps else None


def dev_sets(
    task: TaskSpec,
    dev_split: str,
    settings: DataSettings,
    max_len: int,
    max_eval: int | None,
    read_from: TaskSpec | None = None,
) -> list[EvalSet]:
    """English dev sets of a task. A '+'-joined split (ANLI's dev_r1+dev_r2+dev_r3) is scored per part,
    each capped at ``max_eval``; its overall score is then the example-weighted mean of the parts.
    ``read_from``: the spec whose split is read (``target.select_on=train_task``: MNLI's for XNLI),
    scored as ``task``'s dev set."""
    parts = split_parts(dev_split)
    sets = []
    source = read_from or task
    for part in parts:
        feats, loaded = load_and_featurize(
            source, task.head, part, "en", settings, max_len, max_eval, draw=True
        )
        origin, examples = loaded.origin, loaded.examples
        whole = len(parts) > 1
        sets.append(
            EvalSet(
                task.name,
                part if whole else "dev",
                "en",
                feats,
                origin,
                examples,
                part_of="dev" if whole else None,
                source_split=part,
            )
        )
    return sets


def prepare_stage_data(
    task: TaskSpec,
    train_task: TaskSpec | None,
    train_split: str | None,
    dev_split: str | None,
    test_split: str | None,
    languages: list[str],
    settings: DataSettings,
    max_len: int,
    max_train: int | None,
    max_eval: int | None,
    val_subset: int | None = None,
    dev_task: TaskSpec | None = None,
) -> StageData:
    """Load and featurise a stage's data. Training and dev are English; test covers ``languages``.

    A test language whose files are absent is reported in ``skipped`` (one line each) and left out;
    a missing training or dev set, or English test set, is an error.
    """
    train = None
    train_origin = ""
    if train_task is not None and train_split:
        if train_task.label_names != task.label_names:
            raise ValueError(
                f"{task.name}: training task {train_task.name} has labels {list(train_task.label_names)}, "
                f"expected {list(task.label_names)}"
            )
        train, train_origin, _ = load_features(
            train_task, task.head, train_split, "en", settings, max_len, max_train
        )
    cap = selection_cap(max_eval, val_subset)
    val = dev_sets(task, dev_split, settings, max_len, cap, read_from=dev_task) if dev_split else []
    test, skipped = [], []
    if test_split:
        for lang in languages:
            try:
                feats, origin, examples = load_features(
                    task, task.head, test_split, lang, settings, max_len, max_eval
                )
            except MissingDataError as err:
                if lang == "en":  # the gap is measured from English: no English test, no result
                    raise DataError(f"{err} (the English test: the gap is measured from it)") from None
                skipped.append(str(err))
                continue
            test.append(EvalSet(task.name, "test", lang, feats, origin, examples, source_split=test_split))
    return StageData(train, train_origin, val, test, skipped)


class StageDataModule(pl.LightningDataModule):
    """Wraps prepared features into length-grouped, dynamically padded dataloaders."""

    def __init__(
        self,
        data: StageData,
        tokenizer: PreTrainedTokenizerBase,
        per_device_batch_size: int,
        eval_batch_size: int,
        seed: int,
        num_workers: int = 0,
        accumulate: int = 1,
    ) -> None:
        super().__init__()
        self.accumulate = accumulate  # a mixture epoch is steps_per_epoch optimizer steps
        self.train_sampler: MultiTaskBatchSampler | None = None
        self.data = data
        self.collate = Collator(tokenizer)
        self.per_device_batch_size = per_device_batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.num_workers = num_workers

    def _ranks(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, features: datasets.Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        rank, world = self._ranks()
        sampler = LengthGroupedBatchSampler(features["length"], batch_size, shuffle, self.seed, rank, world)
        columns = [c for c in features.column_names if c != "length"]
        return (ResumableDataLoader if shuffle else DataLoader)(
            features.select_columns(columns),
            batch_sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        if self.data.mixture is not None:
            return self._mixture_loader(self.data.mixture)
        if self.data.train is None:
            raise RuntimeError("this stage has no training data")
        return self._loader(self.data.train, self.per_device_batch_size, shuffle=True)

    def _mixture_loader(self, mixture: MixtureTrain) -> DataLoader:
        rank, world = self._ranks()
        self.train_sampler = MultiTaskBatchSampler(
            [f["length"] for f in mixture.features],
            self.per_device_batch_size,
            mixture.probabilities,
            mixture.steps_per_epoch * self.accumulate,
            self.seed,
            rank,
            world,
        )
        return ResumableDataLoader(
            MixtureDataset(mixture.features),
            batch_sampler=self.train_sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(s.features, self.eval_batch_size, shuffle=False) for s in self.data.val]

    def test_dataloader(self) -> list[DataLoader]:
        sets = [*self.data.test, *self.data.analysis]
        return [self._loader(s.features, self.eval_batch_size, shuffle=False) for s in sets]
