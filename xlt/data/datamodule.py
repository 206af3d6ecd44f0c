"""One LightningDataModule per stage: English training set, English dev for selection, one test
dataloader per language. Loading and featurisation happen in :func:`prepare_stage_data`, before
the Trainer starts, so missing languages are known (and reported) up front."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pytorch_lightning as pl
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from xlt.data.features import Collator, featurize, tokenizer_fingerprint
from xlt.data.sampling import LengthGroupedBatchSampler, ResumableDataLoader
from xlt.tasks.loading import MissingDataError, load_split
from xlt.tasks.spec import Example, TaskSpec

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

    @property
    def key(self) -> str:
        return f"{self.split}/{self.task}/{self.lang}"

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


@dataclass
class DataSettings:
    source: str
    data_dir: Path | None
    cache_dir: Path | None
    tokenizer: PreTrainedTokenizerBase
    tokenizer_id: str = ""

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
    loaded = load_split(spec, split, lang, settings.source, settings.data_dir, limit=limit)
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
    return features, loaded.origin, loaded.examples


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
) -> StageData:
    """Load and featurise a stage's data. Training and dev are English; test covers ``languages``.

    A test language whose files are absent is reported in ``skipped`` (one line each) and left out;
    a missing training or dev set is an error.
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
    val = []
    if dev_split:
        feats, origin, examples = load_features(task, task.head, dev_split, "en", settings, max_len, max_eval)
        val.append(EvalSet(task.name, "dev", "en", feats, origin, examples))
    test, skipped = [], []
    if test_split:
        for lang in languages:
            try:
                feats, origin, examples = load_features(
                    task, task.head, test_split, lang, settings, max_len, max_eval
                )
            except MissingDataError as err:
                skipped.append(str(err))
                continue
            test.append(EvalSet(task.name, "test", lang, feats, origin, examples))
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
    ) -> None:
        super().__init__()
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
        if self.data.train is None:
            raise RuntimeError("this stage has no training data")
        return self._loader(self.data.train, self.per_device_batch_size, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(s.features, self.eval_batch_size, shuffle=False) for s in self.data.val]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(s.features, self.eval_batch_size, shuffle=False) for s in self.data.test]
