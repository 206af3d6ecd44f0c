"""Token tagging: UD-POS, PAN-X (WikiANN NER) and CCG supertagging, their original files and hub ids.

Every example is ``{"words": [str, ...], "labels": [int, ...]}`` (one label per word). The ``tagging``
featuriser labels the first sub-word of each word, splits long sentences into windows instead of
truncating them, and the head's metric maps predictions back to every word of every sentence.

**UD-POS** reads UD v2.5 CoNLL-U and applies what XTREME's ``download_data.sh`` does to it, so the
words and tags equal XTREME's ``udpos/{split}-{lang}.tsv``:

1. ``third_party/ud-conversion-tools/conllu_to_conll.py --lang {lang}
   --replace_subtokens_with_fused_forms``: a multi-word token (``1-2 del`` over ``1 de`` and
   ``2 el``) becomes ONE word, the fused form, whose tag is the tag of the span's head sub-token. The
   head is the sub-token with the fewest ancestors in the sentence graph (basic HEAD plus the enhanced
   DEPS arcs, as ``lib/conll.py`` builds it); ties go to the first sub-token whose UPOS comes earliest
   in the language's precedence list (``POS_PRECEDENCE``). So Spanish ``del``/``al`` and French
   ``du``/``au`` are ADP, German ``zum`` ADP, Italian ``della`` ADP. Empty nodes (``8.1``) are
   dropped. (Where the original would crash on a tied UPOS missing from the list, that UPOS ranks
   last here.)
2. ``utils_preprocess.py udpos_preprocess``: all treebanks of a language are pooled in sorted file-name
   order (``UD_*/{lang}_*-ud-{split}.conllu``); a sentence whose words are ``_`` except at most one is
   dropped (Arabic NYUAD ships without words); ZWNJ (U+200C) and ASCII spaces are removed from
   words (Vietnamese VTB's multi-syllable words become one string, as in XTREME).

The hub's ``google/xtreme`` ``udpos.*`` configs read CoNLL-U without step 1 (sub-tokens stay
separate words); the hub mapper applies step 2's space removal, so hub and raw files differ only on
sentences with multi-word tokens (counts per language: docs/hub-data.md).

**PAN-X** reads Rahimi et al.'s raw ``lang:token<TAB>tag`` files, stripping the ``lang:`` prefix at
the first colon as XTREME's ``panx_preprocess`` does; labels are IOB2 over PER/ORG/LOC.

**CCG** reads CCGbank 1.1 ``.auto`` derivations (LDC2005T13, licensed: supply it under
``data.dir``); words and supertags are the leaves' 5th and 2nd fields as in jiant's
``scripts/ccg/ccg_proc.py``, with jiant's sections (train 00-18, dev 19-21, test 22-24). The label set
is derived from the files present, the way jiant's ``scripts/ccg/ccg_to_num.py`` built its 1,363 ids:
every distinct supertag of train, then test, then dev, in order of first appearance (files sorted
here; jiant used ``os.listdir`` order). The head has jiant's 1,363 outputs (``LABELS = range(1363)``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from xlt.tasks.conllu import conllu_sentences, fuse
from xlt.tasks.rawio import open_text, pairs, text_lines, words
from xlt.tasks.registry import register_format, register_hub_mapper, register_task
from xlt.tasks.spec import DataError, Example, Exclusion, HubFile, RawFile, Reader, TaskSpec, Xtreme

log = logging.getLogger(__name__)

# The 17 UPOS tags in google/xtreme's udpos ClassLabel order (alphabetical).
UPOS_LABELS = words("ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X")
# google/xtreme PAN-X.* ner_tags ClassLabel order.
PANX_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")

# XTREME's 33 UD-POS languages and the google/xtreme config names (udpos.{Name}), as "code:Name" pairs.
UDPOS_HUB_NAMES = pairs(
    """
    af:Afrikaans ar:Arabic bg:Bulgarian de:German el:Greek en:English es:Spanish et:Estonian eu:Basque
    fa:Persian fi:Finnish fr:French he:Hebrew hi:Hindi hu:Hungarian id:Indonesian it:Italian ja:Japanese
    kk:Kazakh ko:Korean mr:Marathi nl:Dutch pt:Portuguese ru:Russian ta:Tamil te:Telugu th:Thai tl:Tagalog
    tr:Turkish ur:Urdu vi:Vietnamese yo:Yoruba zh:Chinese
    """
)
UDPOS_LANGS = tuple(UDPOS_HUB_NAMES)
# XTREME's 40 PAN-X languages (evaluate.py XTREME_TASK2LANGS order).
PANX_LANGS = words(
    "ar he vi id jv ms tl eu ml ta te af nl en de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw yo my zh "
    "kk tr et fi hu"
)

# conllu_to_conll.py's POSRANKPRECEDENCEDICT in XTREME's copy (keyed by the file-name language).
POS_PRECEDENCE: dict[str, tuple[str, ...]] = {
    "default": words("VERB NOUN PROPN PRON ADJ NUM ADV INTJ AUX ADP DET PART CCONJ SCONJ X PUNCT"),
    "es": ("VERB", "AUX", "PRON", "ADP", "DET"),
    "fr": ("VERB", "AUX", "PRON", "NOUN", "ADJ", "ADV", "ADP", "DET", "PART", "SCONJ", "CONJ"),
    "it": ("VERB", "AUX", "ADV", "PRON", "ADP", "DET", "INTJ"),
}

ZWNJ = "\u200c"


def _label_ids(tags: Sequence[str], names: Sequence[str], where: str) -> list[int]:
    index = {name: i for i, name in enumerate(names)}
    try:
        return [index[t] for t in tags]
    except KeyError as err:
        raise DataError(f"{where}: unknown tag {err.args[0]!r} (expected one of {list(names)})") from None


def _tagged(words: list[str], labels: list[int], where: str) -> Example:
    if not words:
        raise DataError(f"{where}: empty sentence")
    if len(words) != len(labels):
        raise DataError(f"{where}: {len(words)} words but {len(labels)} tags")
    return {"words": words, "labels": labels}


# -- UD-POS ------------------------------------------------------------------------------------------


def xtreme_udpos_words(words: list[str]) -> list[str]:
    """XTREME's ``udpos_preprocess``: ZWNJ and ASCII spaces removed from every word."""
    return ["".join(w.replace(ZWNJ, "").split(" ")) for w in words]


@register_format("ud_conllu")
def read_ud_conllu(path: Path, lang: str) -> Iterator[Example]:
    """One UD v2.5 treebank file, converted as XTREME does (module docstring). The language of the
    precedence list is the file-name prefix (``es_gsd-ud-test.conllu`` -> ``es``), as in XTREME."""
    precedence = POS_PRECEDENCE.get(path.name.split("_")[0], POS_PRECEDENCE["default"])
    for rows in conllu_sentences(path):
        words, tags, lineno = fuse(rows, precedence, path)
        words = [w.strip() for w in words]
        n_empty = sum(w == "_" for w in words)
        if n_empty and n_empty >= len(words) - 1:
            continue  # a sentence without words (XTREME's rule: keep if none or fewer than n-1 are "_")
        words = xtreme_udpos_words(words)
        where = f"{path}:{lineno}"
        yield _tagged(words, _label_ids([t.strip() for t in tags], UPOS_LABELS, where), where)


def _word_and_tag(line: str, where: str, layout: str) -> tuple[str, str]:
    """The two fields of a ``word<TAB>tag`` line (trailing spaces allowed), each non-empty: an extra
    tab (a third field) or a missing tag is an error, not a shifted or dropped field."""
    items = line.rstrip("\r\n").split("\t")
    if len(items) != 2:
        raise DataError(f"{where}: expected '{layout}', got {len(items)} tab-separated field(s)")
    word, tag = items[0].strip(), items[1].strip()
    if not word or not tag:
        raise DataError(f"{where}: expected '{layout}', got an empty {'word' if not word else 'tag'}")
    return word, tag


def _two_column_reader(names: Sequence[str]) -> Reader:
    def read(path: Path, lang: str) -> Iterator[Example]:
        """XTREME's preprocessed ``{split}-{lang}.tsv``: ``word<TAB>tag`` per line, a blank line
        between sentences (its test files carry no tags and cannot be scored)."""
        words: list[str] = []
        tags: list[str] = []
        start = 1
        for lineno, line in enumerate([*text_lines(path), ""], 1):
            if not line.strip():
                if words:
                    yield _tagged(words, _label_ids(tags, names, f"{path}:{start}"), f"{path}:{start}")
                words, tags, start = [], [], lineno + 1
                continue
            word, tag = _word_and_tag(line, f"{path}:{lineno}", "word<TAB>tag")
            words.append(word)
            tags.append(tag)

    return read


register_format("xtreme_udpos_tsv")(_two_column_reader(UPOS_LABELS))


def _hub_tags(row: Mapping[str, Any], column: str, names: Sequence[str], where: str) -> list[int]:
    tags = list(row[column])
    if tags and isinstance(tags[0], str):
        return _label_ids(tags, names, where)
    return [int(t) for t in tags]  # ClassLabel ids, in the order of ``names``


@register_hub_mapper("udpos_hf")
def map_hub_udpos(row: Mapping[str, Any], lang: str) -> Example | None:
    """As XTREME's preprocessing where the hub's rows allow: inner spaces and ZWNJ removed from words.
    The split-off parts of a multi-word token stay separate words (the hub has no fused form; XTREME
    keeps only the fused form): measured per language in docs/hub-data.md."""
    where = f"hub google/xtreme udpos ({lang})"
    words = xtreme_udpos_words([str(w).strip() for w in row["tokens"]])
    return _tagged(words, _hub_tags(row, "pos_tags", UPOS_LABELS, where), where)


# -- PAN-X -------------------------------------------------------------------------------------------


@register_format("panx_raw")
def read_panx_raw(path: Path, lang: str) -> Iterator[Example]:
    """Rahimi et al.'s ``{lang}/{train,dev,test}``: ``lang:token<TAB>tag``, blank line between sentences.
    The prefix is cut at the first colon (XTREME's ``items[0].find(':')``)."""
    words: list[str] = []
    tags: list[str] = []
    start = 1
    for lineno, line in enumerate([*text_lines(path), ""], 1):
        if not line.strip():
            if words:
                where = f"{path}:{start}"
                yield _tagged(words, _label_ids(tags, PANX_LABELS, where), where)
            words, tags, start = [], [], lineno + 1
            continue
        token, tag = _word_and_tag(line, f"{path}:{lineno}", "lang:token<TAB>tag")
        colon = token.find(":")
        if colon == -1:
            raise DataError(f"{path}:{lineno}: token {token!r} lacks the '{lang}:' prefix")
        word = token[colon + 1 :].strip()
        if not word:
            raise DataError(f"{path}:{lineno}: empty token after the '{token[: colon + 1]}' prefix")
        words.append(word)
        tags.append(tag)


register_format("xtreme_panx_tsv")(_two_column_reader(PANX_LABELS))


@register_hub_mapper("panx_hf")
def map_hub_panx(row: Mapping[str, Any], lang: str) -> Example | None:
    where = f"hub google/xtreme PAN-X.{lang}"
    return _tagged(list(row["tokens"]), _hub_tags(row, "ner_tags", PANX_LABELS, where), where)


# -- CCG supertagging --------------------------------------------------------------------------------

CCG_NUM_LABELS = 1363  # jiant's CCGTask.LABELS = range(1363)
CCG_SECTIONS = {"train": range(0, 19), "dev": range(19, 22), "test": range(22, 25)}  # jiant ccg_proc.py
# ccg_to_num.py numbers the supertags of train, then test, then dev.
CCG_INVENTORY_ORDER = ("train", "test", "dev")
_LEAF = re.compile(r"\(<L (\S+) (\S+) (\S+) (\S+) ")


def read_ccgbank_auto(path: Path, lang: str = "en") -> Iterator[dict[str, Any]]:
    """Sentences of a CCGbank ``.auto`` file as ``{"id", "words", "tags"}`` (supertag strings).

    Derivation lines follow ``ID=`` lines; each leaf is ``(<L category POS POS word pred-arg-category>)``.
    """
    ident = ""
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if line.startswith("ID="):
                ident = line.split()[0][3:]
                continue
            if "<" not in line:
                continue
            leaves = _LEAF.findall(line)
            if not leaves:
                raise DataError(
                    f"{path}:{lineno}: derivation without leaves '(<L category POS POS word ...>)'"
                )
            if len(leaves) != line.count("(<L "):
                raise DataError(
                    f"{path}:{lineno}: {line.count('(<L ') - len(leaves)} of {line.count('(<L ')} leaves lack "
                    "fields (expected '(<L category POS POS word pred-arg-category>)')"
                )
            yield {
                "id": ident or f"{path.name}:{lineno}",
                "words": [leaf[3] for leaf in leaves],
                "tags": [leaf[0] for leaf in leaves],
            }


def _ccg_section(path: Path) -> int:
    try:
        return int(path.parent.name)
    except ValueError:
        raise DataError(
            f"{path}: not in a two-digit CCGbank section directory (AUTO/00 ... AUTO/24)"
        ) from None


@lru_cache(maxsize=8)
def ccg_supertag_inventory(auto_root: Path) -> tuple[str, ...]:
    """The supertag label set of the CCGbank ``AUTO`` tree at ``auto_root``, as jiant built it: every
    distinct supertag of the train, then test, then dev sections, in order of first appearance."""
    files = sorted(auto_root.glob("[0-9][0-9]/*.auto"))
    seen: dict[str, None] = {}
    for split in CCG_INVENTORY_ORDER:
        for path in files:
            if _ccg_section(path) in CCG_SECTIONS[split]:
                for sentence in read_ccgbank_auto(path):
                    seen.update(dict.fromkeys(sentence["tags"]))
    inventory = tuple(seen)
    if len(inventory) > CCG_NUM_LABELS:
        raise DataError(
            f"{auto_root}: {len(inventory)} distinct supertags, more than jiant's {CCG_NUM_LABELS} outputs"
        )
    log.info(
        "ccg: %d supertags in %s (train, test, dev sections in order of first appearance; jiant: %d)",
        len(inventory),
        auto_root,
        CCG_NUM_LABELS,
    )
    return inventory


def _ccg_split_reader(split: str) -> Reader:
    def read(path: Path, lang: str) -> Iterator[Example]:
        if _ccg_section(path) not in CCG_SECTIONS[split]:
            return
        ids = {tag: i for i, tag in enumerate(ccg_supertag_inventory(path.parent.parent))}
        for sentence in read_ccgbank_auto(path, lang):
            yield _tagged(sentence["words"], [ids[t] for t in sentence["tags"]], f"{path} {sentence['id']}")

    read.__doc__ = (
        f"CCGbank ``.auto`` files of the {split} sections {CCG_SECTIONS[split]} (others yield nothing)."
    )
    return read


for _split in CCG_SECTIONS:
    register_format(f"ccgbank_auto_{_split}")(_ccg_split_reader(_split))


# -- Specs -------------------------------------------------------------------------------------------


UDPOS = register_task(
    TaskSpec(
        name="udpos",
        dev_in_other_languages=True,
        description="UD-POS (UD v2.5, XTREME's conversion): English train, English dev, 33 test languages",
        head="tagging",
        metrics=("f1", "acc"),  # seqeval-0.0.12 F1 as evaluate.py scores it, then token accuracy
        languages=UDPOS_LANGS,
        label_names=UPOS_LABELS,
        lang3=UDPOS_HUB_NAMES,
        raw={
            split: (
                RawFile(f"ud_pos/UD_*/{{lang}}_*-ud-{split}.conllu", "ud_conllu"),
                RawFile(f"ud-treebanks-v2.5/UD_*/{{lang}}_*-ud-{split}.conllu", "ud_conllu"),
                RawFile(f"udpos/{split}-{{lang}}.tsv", "xtreme_udpos_tsv"),
            )
            for split in ("train", "dev", "test")
        },
        hub={
            "train": HubFile("google/xtreme", "udpos.{lang3}", "train", "udpos_hf"),
            "dev": HubFile("google/xtreme", "udpos.{lang3}", "validation", "udpos_hf"),
            "test": HubFile("google/xtreme", "udpos.{lang3}", "test", "udpos_hf"),
        },
        train_task="udpos",
        max_seq_length=256,
        exclusions=(
            Exclusion(
                sets=("udpos/train", "udpos/dev"),
                reason="UD English EWT repeats web sentences across its splits (in UD v2.5: 1 train and 5 dev "
                "sentences equal an English test sentence): removed from English training and selection",
            ),
        ),
        roles=("target",),
        citation="Nivre et al. 2020 (UD v2.5); Hu et al. 2020 (XTREME)",
        xtreme=Xtreme("tagging", "seqeval"),
    )
)

PANX = register_task(
    TaskSpec(
        name="panx",
        train_sizes={
            "train": (20_000, "PAN-X en train (HF google/xtreme PAN-X.en, 20k/10k/10k)"),
        },
        dev_in_other_languages=True,
        description="PAN-X / WikiANN NER (Rahimi et al. splits): English train, English dev, 40 test languages",
        head="tagging",
        metrics=("f1", "precision", "recall"),  # seqeval-0.0.12 entity F1 as evaluate.py scores it
        languages=PANX_LANGS,
        label_names=PANX_LABELS,
        raw={
            split: (
                RawFile(f"panx_dataset/{{lang}}/{split}", "panx_raw"),
                RawFile(f"panx_dataset/{{lang}}-{split}", "panx_raw"),
                RawFile(f"panx/{split}-{{lang}}.tsv", "xtreme_panx_tsv"),
            )
            for split in ("train", "dev", "test")
        },
        hub={
            "train": HubFile("google/xtreme", "PAN-X.{lang}", "train", "panx_hf"),
            "dev": HubFile("google/xtreme", "PAN-X.{lang}", "validation", "panx_hf"),
            "test": HubFile("google/xtreme", "PAN-X.{lang}", "test", "panx_hf"),
        },
        train_task="panx",
        max_seq_length=256,
        roles=("target",),
        citation="Pan et al. 2017; Rahimi et al. 2019",
        xtreme=Xtreme("tagging", "seqeval"),
    )
)

CCG = register_task(
    TaskSpec(
        name="ccg",
        description="CCG supertagging on CCGbank 1.1 (LDC2005T13, licensed; not on the hub): jiant's splits and 1,363 labels",
        head="tagging",
        metrics=("acc",),
        languages=("en",),
        label_names=tuple(str(i) for i in range(CCG_NUM_LABELS)),  # ids into ccg_supertag_inventory
        raw={
            split: tuple(
                RawFile(f"{root}/data/AUTO/[0-9][0-9]/wsj_*.auto", f"ccgbank_auto_{split}")
                for root in ("ccgbank_1_1", "ccgbank", "ccg/ccgbank_1_1")
            )
            for split in CCG_SECTIONS
        },
        max_seq_length=256,  # jiant's simple-API length (X-STILTs intermediate tasks)
        roles=("intermediate",),
        citation="Hockenmaier and Steedman 2007",
    )
)
