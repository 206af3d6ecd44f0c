"""Data of a mixture stage (ANLI+, all9): each member task's English training and dev sets, the
sampling probabilities and the epoch length. A member that cannot load stops the run (one line naming
it) unless ``intermediate.skip_members`` names it; then it is left out, one line each."""

from __future__ import annotations

import logging
import math
from typing import Any

import datasets

from xlt.data.datamodule import (
    DataSettings,
    EvalSet,
    MixtureTrain,
    StageData,
    dev_sets,
    load_and_featurize,
    selection_cap,
)
from xlt.data.sampling import MultiTaskBatchSampler, mixture_probabilities
from xlt.tasks.loading import Loaded, MissingDataError, member_missing
from xlt.tasks.registry import flatten_mixture, get_task
from xlt.tasks.spec import DataError, MixtureSpec, TaskSpec

log = logging.getLogger(__name__)


def _member_data(
    member: Any, settings: DataSettings, val_subset: int | None
) -> tuple[datasets.Dataset, Loaded, list[EvalSet]]:
    """One member's featurized training set, what it was loaded from, and its dev sets (none when
    the member is not scored on dev: its plan has no dev split)."""
    spec = get_task(member.task)
    max_len = member.max_seq_length
    train, loaded = load_and_featurize(
        spec, spec.head, member.train_split, "en", settings, max_len, member.max_train_examples
    )
    if member.dev_split is None:
        return train, loaded, []
    cap = selection_cap(member.max_eval_examples, val_subset)
    return train, loaded, dev_sets(spec, member.dev_split, settings, max_len, cap)


def prepare_mixture_data(mixture: MixtureSpec, stage: Any, settings: DataSettings) -> StageData:
    """Load every member's training set (and dev set, for the members scored on dev).

    A member whose training or dev data cannot load stops the run (DataError naming it) unless
    ``intermediate.skip_members`` lists it: then it is left out with one line in ``skipped``; when no
    member is left, a DataError names the mixture. ``stage`` is the stage's plan
    (xlt.orchestration.plan.StagePlan: its members with their splits and caps, the members left out,
    the sampling, the batch size, the selection subset)."""
    flat = flatten_mixture(mixture)
    mix = stage.mixture  # members left out, sampling
    members = {m.task: m for m in stage.members}
    skip = set(mix.skip_members)
    tasks: list[str] = []
    features: list[datasets.Dataset] = []
    origins: list[str] = []
    dropped: dict[str, int] = {}
    specs: dict[str, TaskSpec] = {}
    val: list[EvalSet] = []
    skipped: list[str] = []
    for task in flat.tasks:
        if task in mix.not_trained:
            log.info("%s: member %s not trained (intermediate.only)", mixture.name, task)
            continue
        try:
            train, loaded, dev = _member_data(members[task], settings, stage.selection.val_subset)
        except MissingDataError as err:
            if task not in skip:  # a mixture never silently changes
                raise DataError(member_missing(mixture.name, task, err)) from None
            skipped.append(
                f"{mixture.name}: member {task} left out (intermediate.skip_members), no data ({err})"
            )
            continue
        tasks.append(task)
        features.append(train)
        origins.append(loaded.origin)
        dropped[task] = loaded.dropped
        specs[task] = get_task(task)
        val.extend(dev)
    if not tasks:
        for line in skipped:  # the reasons, before the one-line error
            log.warning("skipped: %s", line)
        raise DataError(
            f"intermediate {mixture.name}: no member has training data (all of {', '.join(flat.tasks)} left out)"
        )
    sampling = mix
    sizes = [len(f) for f in features]
    probabilities = mixture_probabilities(sizes, sampling.cap, sampling.temperature)
    steps = sampling.steps_per_epoch or mixture_steps_per_epoch(sizes, stage.batch.batch_size, sampling.cap)
    head_of = {t: flat.head_of[t] for t in tasks}
    train_data = MixtureTrain(
        mixture.name, tasks, features, origins, head_of, probabilities, steps, dropped, specs
    )
    origin = " ; ".join(f"{t}: {o}" for t, o in zip(tasks, origins, strict=True))
    return StageData(None, origin, val, [], skipped, mixture=train_data)


def mixture_steps_per_epoch(sizes: list[int], batch_size: int, cap: int | None) -> int:
    """jiant's count: sum over tasks of ceil(min(n_t, cap) / batch_size) optimizer steps."""
    return sum(math.ceil((min(n, cap) if cap is not None else n) / batch_size) for n in sizes)


def log_mixture(
    mixture: MixtureTrain,
    per_device_batch_size: int,
    accumulate: int,
    seed: int,
    epochs: float,
    logger: Any,
    world_size: int = 1,
) -> dict[str, Any]:
    """Log (console and experiment logger) and return, for the run state, each member's size,
    sampling probability and what the sampler draws for it over the stage's epochs (all ranks),
    replaying the training sampler's plan (the same seed and batch counts)."""
    sampler = MultiTaskBatchSampler(
        [f["length"] for f in mixture.features],
        per_device_batch_size,
        mixture.probabilities,
        mixture.steps_per_epoch * accumulate,
        seed,
        0,
        world_size,
    )
    n_epochs = max(1, math.ceil(epochs))
    drawn = [[0, 0] for _ in mixture.tasks]
    for epoch in range(n_epochs):
        for i, (batches, examples) in enumerate(sampler.draws(epoch)):
            drawn[i][0] += batches
            drawn[i][1] += examples
    info: dict[str, Any] = {"steps_per_epoch": mixture.steps_per_epoch, "epochs": epochs, "tasks": {}}
    for i, task in enumerate(mixture.tasks):
        n = len(mixture.features[i])
        info["tasks"][task] = {
            "head": mixture.head_of[task],
            "n_train": n,
            "dropped_unlabelled": mixture.dropped.get(task, 0),
            "probability": mixture.probabilities[i],
            "drawn_batches": drawn[i][0],
            "drawn_examples": drawn[i][1],
        }
        log.info(
            "%s: %s (head %s): %d training features, p=%.4f, sampler draws %d batches / %d examples "
            "over %d epoch(s); %d unlabelled rows dropped",
            mixture.name,
            task,
            mixture.head_of[task],
            n,
            mixture.probabilities[i],
            drawn[i][0],
            drawn[i][1],
            n_epochs,
            mixture.dropped.get(task, 0),
        )
    if logger:
        logger.log_metrics(
            {f"train/{task}/drawn_examples": v["drawn_examples"] for task, v in info["tasks"].items()}
        )
    return info
