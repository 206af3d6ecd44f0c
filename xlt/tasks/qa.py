"""Extractive (span) question answering: SQuAD v1.1 and v2.0 (intermediate tasks), XQuAD, MLQA and
TyDiQA-GoldP (XTREME targets), their original file formats and hub ids.

Every example has ``id``, ``question``, ``context``, ``answers`` (a list of ``{"text", "answer_start"}``,
empty only for SQuAD v2.0 no-answer questions) and ``is_impossible``. How each split's data is scored
is the spec's ``qa_scoring`` (``squad``: the SQuAD v1.1 script, which XTREME uses for XQuAD and
TyDiQA in every language, and the default; ``squad_v2``; ``mlqa``: language-specific MLQA rules): the
scorer follows the data, so MLQA's selection split ``squad_dev``, SQuAD's dev, is scored like SQuAD.

Selection (the ``dev_split`` of each target; XTREME has no non-English selection data):

- XQuAD and MLQA select on the SQuAD v1.1 dev set (split ``squad_dev``), as XTREME's ``train_qa.sh``
  predicts on it; XQuAD has no dev set of its own and MLQA's English dev is a different split.
- TyDiQA-GoldP has no selection set (the final checkpoint is kept, as XTREME's ``train_qa.sh`` does):
  its English dev is XTREME's English *test* file, so selecting on it leaks. ``squad_dev`` is there
  for runs that want SQuAD-dev selection instead.
"""

from __future__ import annotations

from xlt.tasks.qa_formats import QA_METRICS, SQUAD_V2_METRICS, TYDIQA_LANGUAGE_NAMES
from xlt.tasks.registry import register_task
from xlt.tasks.spec import Exclusion, HubFile, RawFile, TaskSpec, Xtreme


def _squad_v1_raw(split: str) -> tuple[RawFile, ...]:
    # Official name (rajpurkar.github.io), XTREME's download/squad/, then the shared-data derivation.
    return (
        RawFile(f"squad/{split}-v1.1.json", "squad_v1_json"),
        RawFile(f"squad_v1.1/{split}-v1.1.json", "squad_v1_json"),
        RawFile(f"{split}-v1.1.json", "squad_v1_json"),
        RawFile(f"squad_v1.1/{split}-v1.1.explorer.json", "squad_v1_json"),
    )


SQUAD_DEV_RAW = _squad_v1_raw("dev")
SQUAD_DEV_HUB = HubFile("rajpurkar/squad", None, "validation", "squad_hf")

SQUAD = register_task(
    TaskSpec(
        name="squad",
        train_sizes={
            "train": (87_599, "SQuAD v1.1 train"),
        },
        description="SQuAD v1.1, English; official EM/F1 (v1.1 script)",
        head="span_qa",
        metrics=QA_METRICS,
        languages=("en",),
        raw={"train": _squad_v1_raw("train"), "dev": SQUAD_DEV_RAW},
        hub={"train": HubFile("rajpurkar/squad", None, "train", "squad_hf"), "dev": SQUAD_DEV_HUB},
        max_seq_length=384,
        roles=("intermediate", "train_source"),
        citation="Rajpurkar et al. 2016",
    )
)

SQUAD_V2 = register_task(
    TaskSpec(
        name="squad2",
        train_sizes={
            "train": (130_319, "SQuAD v2.0 train"),
        },
        description="SQuAD v2.0, English, with no-answer questions; official v2.0 EM/F1, HasAns/NoAns, best threshold",
        head="span_qa",
        metrics=SQUAD_V2_METRICS,
        languages=("en",),
        raw={
            split: (
                RawFile(f"squad/{split}-v2.0.json", "squad_v2_json"),
                RawFile(f"squad_v2.0/{split}-v2.0.json", "squad_v2_json"),
                RawFile(f"{split}-v2.0.json", "squad_v2_json"),
                RawFile(f"squad_v2.0/{split}-v2.0.explorer.json", "squad_v2_json"),
            )
            for split in ("train", "dev")
        },
        hub={
            "train": HubFile("rajpurkar/squad_v2", None, "train", "squad_v2_hf"),
            "dev": HubFile("rajpurkar/squad_v2", None, "validation", "squad_v2_hf"),
        },
        max_seq_length=384,
        qa_scoring={"dev": "squad_v2"},
        roles=("intermediate",),
        citation="Rajpurkar et al. 2018",
    )
)

XQUAD = register_task(
    TaskSpec(
        name="xquad",
        description="XQuAD: trained on SQuAD v1.1, selected on SQuAD v1.1 dev minus every question on XQuAD's paragraphs, tested on "
        "11 languages (v1.1 scoring)",
        head="span_qa",
        metrics=QA_METRICS,
        languages=("en", "es", "de", "el", "ru", "tr", "ar", "vi", "th", "zh", "hi"),  # evaluate.py's order
        raw={
            "squad_dev": SQUAD_DEV_RAW,
            "test": (
                RawFile("xquad/xquad.{lang}.json", "squad_v1_json"),
                RawFile("xquad.{lang}.json", "squad_v1_json"),
            ),
        },
        hub={
            "squad_dev": SQUAD_DEV_HUB,
            "test": HubFile("google/xtreme", "XQuAD.{lang}", "validation", "squad_hf"),
        },
        train_task="squad",
        dev_split="squad_dev",
        exclusions=(
            Exclusion(
                sets=("xquad/squad_dev", "squad/dev", "squad2/dev"),
                reason="XQuAD's 1,190 test questions are SQuAD v1.1 dev questions (same ids; 1,190 of SQuAD "
                "v1.1 dev, 817 of SQuAD v2.0 dev), and SQuAD v2.0 dev adds 882 no-answer questions on XQuAD's "
                "240 paragraphs: all removed from SQuAD dev wherever a run selects or trains on it",
                fields=("context",),
            ),
        ),
        max_seq_length=384,
        roles=("target",),
        citation="Artetxe et al. 2020",
        xtreme=Xtreme("qa", "squad"),
    )
)


def _mlqa_raw(split: str) -> tuple[RawFile, ...]:
    name = f"{split}/{split}-context-{{lang}}-question-{{lang}}.json"
    files = [RawFile(f"MLQA_V1/{name}", "mlqa_json"), RawFile(f"mlqa/MLQA_V1/{name}", "mlqa_json")]
    if split == "dev":
        files.append(RawFile(f"mlqa/{name}", "mlqa_json"))  # the shared data's derived de-de dev
    return tuple(files)


MLQA = register_task(
    TaskSpec(
        name="mlqa",
        description="MLQA (context language = question language): trained on SQuAD v1.1, selected on SQuAD v1.1 dev, "
        "tested with MLQA's language-specific EM/F1",
        head="span_qa",
        metrics=QA_METRICS,
        languages=("en", "es", "de", "ar", "hi", "vi", "zh"),  # evaluate.py's order
        raw={"squad_dev": SQUAD_DEV_RAW, "dev": _mlqa_raw("dev"), "test": _mlqa_raw("test")},
        hub={
            "squad_dev": SQUAD_DEV_HUB,
            "dev": HubFile("google/xtreme", "MLQA.{lang}.{lang}", "validation", "mlqa_hf"),
            "test": HubFile("google/xtreme", "MLQA.{lang}.{lang}", "test", "mlqa_hf"),
        },
        train_task="squad",
        dev_split="squad_dev",
        max_seq_length=384,
        qa_scoring={"dev": "mlqa", "test": "mlqa"},  # squad_dev: SQuAD v1.1, the default
        roles=("target",),
        citation="Lewis et al. 2020",
        xtreme=Xtreme("qa", "mlqa"),
    )
)

TYDIQA = register_task(
    TaskSpec(
        name="tydiqa",
        train_sizes={
            "train": (3_696, "TyDiQA-GoldP en train (unverified: reference.md marks it [U])"),
        },
        description="TyDiQA-GoldP: trained on its English train only (ids english-*), no selection set (final "
        "checkpoint), tested on the GoldP dev of 9 languages (v1.1 scoring)",
        head="span_qa",
        metrics=QA_METRICS,
        languages=tuple(TYDIQA_LANGUAGE_NAMES),
        raw={
            # XTREME's per-language split of the train file (both names its scripts use), then the
            # official multilingual file, read through the language filter.
            "train": (
                RawFile("tydiqa/tydiqa-goldp-v1.1-train/tydiqa.goldp.{lang}.train.json", "squad_v1_json"),
                RawFile("tydiqa/tydiqa-goldp-v1.1-train/tydiqa.{lang}.train.json", "squad_v1_json"),
                RawFile("tydiqa-goldp-v1.1-train/tydiqa.goldp.{lang}.train.json", "squad_v1_json"),
                RawFile("tydiqa/tydiqa-goldp-v1.1-train/tydiqa-goldp-v1.1-train.json", "tydiqa_goldp_json"),
                RawFile("tydiqa/tydiqa-goldp-v1.1-train.json", "tydiqa_goldp_json"),
                RawFile("tydiqa-goldp-v1.1-train.json", "tydiqa_goldp_json"),
            ),
            "test": (
                RawFile("tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.{lang}.dev.json", "squad_v1_json"),
                RawFile("tydiqa-goldp-v1.1-dev/tydiqa.goldp.{lang}.dev.json", "squad_v1_json"),
                # The official per-language tarball tydiqa-goldp-v1.1-dev.tgz, as it unpacks
                # ({lang3}: the language's English name, as in its question ids).
                RawFile("tydiqa/tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{lang3}.json", "squad_v1_json"),
                RawFile("tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{lang3}.json", "squad_v1_json"),
                RawFile("tydiqa/tydiqa-goldp-v1.1-dev.json", "tydiqa_goldp_json"),
                RawFile("tydiqa-goldp-v1.1-dev.json", "tydiqa_goldp_json"),
            ),
            "squad_dev": SQUAD_DEV_RAW,
        },
        hub={
            "train": HubFile("google-research-datasets/tydiqa", "secondary_task", "train", "tydiqa_hf"),
            "test": HubFile("google-research-datasets/tydiqa", "secondary_task", "validation", "tydiqa_hf"),
            "squad_dev": SQUAD_DEV_HUB,
        },
        lang3=TYDIQA_LANGUAGE_NAMES,  # the official per-language dev files are named by it
        train_task="tydiqa",
        dev_split="",
        max_seq_length=384,
        roles=("target",),
        citation="Clark et al. 2020",
        xtreme=Xtreme("qa", "squad"),
    )
)
