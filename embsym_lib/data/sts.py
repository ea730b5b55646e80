"""Sentence-pair similarity data: a generated graded pair set (offline) and STS-B / AllNLI loaders (paper).

Offline: ``generate_pairs`` builds templated sentences from four slots (subject, verb, object, place).
Every slot value is a *concept* with several synonymous surface forms ("car" / "automobile" / "vehicle")
and a category (vehicles, containers, ...). The gold label of a pair is its degree of semantic overlap,

    label = sum over slots of weight(slot) * match(slot),  match = 1 same concept, 0.5 same category, 0 else,

with weights subject 1.5, verb 1.5, object 1.25, place 0.75 (so labels run 0-5, like STS-B). The two
sentences draw their synonyms and sentence frames independently, so equal meaning often comes with
different words: a bag-of-words encoder gets a moderate correlation, and learning the synonyms improves
it. The label is a symmetric function of the two concept tuples and the two sides are swapped at random,
so the task is symmetric by construction. Splits are disjoint by sentence frame (train, dev and test use
different templates) and no sentence text occurs in two splits.

Paper profile: STS-B in either of its two common distributions (the original ``sts-{train,dev,test}.csv``
of the STS benchmark, or sentence-transformers' ``stsbenchmark.tsv.gz``), and AllNLI as
sentence-transformers ships it (``AllNLI.tsv.gz``) mapped to similarity scores.

A user's own pairs file (``read_pairs_file``, the family's ``test_file``): STS-B's format, one pair a
row — a header naming ``sentence1``, ``sentence2`` and ``score`` (tab-separated like STS-B's .tsv files,
or comma-separated with CSV quoting; other columns ignored; ``.gz`` read as well), or the STS benchmark's
headerless ``sts-*.csv`` layout (tab-separated genre, file, year, id, score, sentence1, sentence2);
scores in [0, 5]. Every row is checked; an error names the file and the line.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import math
import random
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

SPLITS = ("train", "dev", "test")
COLUMNS = ("sentence1", "sentence2", "score")
MAX_SCORE = 5.0

SLOT_WEIGHTS: dict[str, float] = {"subject": 1.5, "verb": 1.5, "object": 1.25, "place": 0.75}
SAME_CATEGORY_CREDIT = 0.5


@dataclass(frozen=True)
class Concept:
    name: str
    category: str
    forms: tuple[str, ...]


def _concepts(category: str, *groups: tuple[str, ...]) -> list[Concept]:
    return [Concept(forms[0], category, forms) for forms in groups]


# Verbs are stored as present participles; the frames add "is" where they need it.
LEXICON: dict[str, list[Concept]] = {
    "subject": [
        *_concepts(
            "person",
            ("man", "guy", "gentleman"),
            ("woman", "lady"),
            ("child", "kid", "youngster"),
            ("teacher", "instructor", "tutor"),
            ("doctor", "physician"),
            ("police officer", "cop", "policeman"),
        ),
        *_concepts(
            "worker",
            ("chef", "cook"),
            ("farmer", "rancher"),
            ("musician", "performer"),
            ("student", "pupil"),
        ),
        *_concepts("animal", ("dog", "hound", "pup"), ("cat", "kitty"), ("horse", "pony"), ("monkey", "ape")),
    ],
    "verb": [
        *_concepts(
            "handle",
            ("carrying", "holding", "hauling"),
            ("throwing", "tossing"),
            ("pushing", "shoving"),
            ("dropping", "letting go of"),
        ),
        *_concepts(
            "care",
            ("cleaning", "washing", "scrubbing"),
            ("fixing", "repairing", "mending"),
            ("painting", "coloring"),
        ),
        *_concepts(
            "trade",
            ("buying", "purchasing"),
            ("selling", "vending"),
            ("watching", "looking at", "observing"),
        ),
        *_concepts("break", ("cutting", "slicing", "chopping"), ("breaking", "smashing", "shattering")),
    ],
    "object": [
        *_concepts(
            "vehicle",
            ("car", "automobile", "vehicle"),
            ("bicycle", "bike", "cycle"),
            ("boat", "ship", "vessel"),
        ),
        *_concepts(
            "container",
            ("box", "crate", "carton"),
            ("bag", "sack"),
            ("cup", "mug"),
            ("bottle", "flask"),
        ),
        *_concepts(
            "item",
            ("phone", "telephone", "cellphone"),
            ("picture", "photo", "photograph"),
            ("gift", "present"),
            ("hat", "cap"),
            ("stone", "rock", "pebble"),
        ),
        *_concepts("furniture", ("sofa", "couch"), ("table", "desk"), ("chair", "seat")),
    ],
    "place": [
        *_concepts(
            "outdoors",
            ("in the park", "at the park"),
            ("on the beach", "by the sea", "at the seaside"),
            ("in the forest", "in the woods"),
            ("in the garden", "in the yard"),
        ),
        *_concepts(
            "town",
            ("on the street", "on the road"),
            ("at the store", "in the shop"),
            ("in the city", "downtown"),
        ),
        *_concepts(
            "indoors",
            ("in the kitchen", "by the stove"),
            ("at home", "in the house"),
            ("at school", "in the classroom"),
        ),
    ],
}

# Descriptive details that carry no meaning for the label (the event is who does what to what, where):
# drawn independently for each sentence, so matching events often differ in wording around them.
SUBJECT_DETAILS = ("young", "old", "tall", "happy", "tired", "small")
OBJECT_DETAILS = ("red", "blue", "green", "large", "old", "wooden", "shiny")
TIME_DETAILS = ("this morning", "at noon", "today", "in the evening", "after lunch")
DETAIL_PROBABILITY = 0.4
NEGATION_PROBABILITY = 0.2

# Sentence frames. {a_s}/{a_o}: the noun with its article ("a"/"an"); {v}: the participle.
FRAMES: tuple[str, ...] = (
    "{A_s} is {v} {a_o} {p}.",
    "{P}, {a_s} is {v} {a_o}.",
    "The {s} is {v} the {o} {p}.",
    "{P}, the {s} is {v} the {o}.",
    "There is {a_s} {v} {a_o} {p}.",
    "{A_s} can be seen {v} the {o} {p}.",
    "Look, {a_s} is {v} {a_o} {p}.",
    "{P} there is {a_s} {v} {a_o}.",
    "Right now {a_s} is {v} {a_o} {p}.",
)
# Which frames each split may use: disjoint, so a trained model is tested on unseen sentence frames.
SPLIT_FRAMES: dict[str, tuple[int, ...]] = {"train": (0, 1, 2, 3, 4), "dev": (5, 6), "test": (7, 8)}


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _detail(noun: str, details: tuple[str, ...], rng: random.Random) -> str:
    return f"{rng.choice(details)} {noun}" if rng.random() < DETAIL_PROBABILITY else noun


def realize(concepts: dict[str, Concept], negated: bool, frame: str, rng: random.Random) -> str:
    """One sentence: a random synonym of each concept, optional details, placed in ``frame``."""
    s, v, o, p = (rng.choice(concepts[slot].forms) for slot in ("subject", "verb", "object", "place"))
    s, o = _detail(s, SUBJECT_DETAILS, rng), _detail(o, OBJECT_DETAILS, rng)
    if negated:
        v = f"not {v}"
    if rng.random() < DETAIL_PROBABILITY:
        p = f"{p} {rng.choice(TIME_DETAILS)}"
    return frame.format(
        s=s, a_s=_article(s), A_s=_article(s).capitalize(), v=v, o=o, a_o=_article(o), p=p, P=p.capitalize()
    )


def overlap_label(
    a: dict[str, Concept], b: dict[str, Concept], a_negated: bool = False, b_negated: bool = False
) -> float:
    """Gold similarity 0-5 of two events; symmetric in (a, b) by construction.

    A verb matches only with the same polarity ("is carrying" vs "is not carrying" share no action).
    """
    total = 0.0
    for slot, weight in SLOT_WEIGHTS.items():
        if slot == "verb" and a_negated != b_negated:
            continue
        if a[slot].name == b[slot].name:
            total += weight
        elif a[slot].category == b[slot].category:
            total += weight * SAME_CATEGORY_CREDIT
    return total


def _partner(concepts: dict[str, Concept], rng: random.Random) -> dict[str, Concept]:
    """A second concept tuple overlapping the first to a per-pair random degree (spreads the labels)."""
    keep = 0.9 * rng.random()
    partner = {}
    for slot, concept in concepts.items():
        if rng.random() < keep:
            partner[slot] = concept
            continue
        same_category = [
            c for c in LEXICON[slot] if c.category == concept.category and c.name != concept.name
        ]
        others = [c for c in LEXICON[slot] if c.name != concept.name]
        partner[slot] = rng.choice(same_category if same_category and rng.random() < 0.5 else others)
    return partner


def generate_pairs(
    n_train: int = 2000, n_dev: int = 300, n_test: int = 600, data_seed: int = 0
) -> dict[str, pd.DataFrame]:
    """The offline graded pair set: split -> DataFrame(sentence1, sentence2, score in [0, 5]).

    Deterministic in its arguments (its own ``random.Random``; global seeds play no part).
    """
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    for split, n in sizes.items():
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"n_{split} must be an integer >= 2, got {n!r}")
    rng = random.Random(f"embsym-sts-{data_seed}")
    seen: set[str] = set()
    out: dict[str, pd.DataFrame] = {}
    for split in SPLITS:
        frames = [FRAMES[i] for i in SPLIT_FRAMES[split]]
        rows: list[tuple[str, str, float]] = []
        used: set[str] = set()
        while len(rows) < sizes[split]:
            first = {slot: rng.choice(concepts) for slot, concepts in LEXICON.items()}
            second = _partner(first, rng)
            first_negated = rng.random() < NEGATION_PROBABILITY
            second_negated = first_negated if rng.random() < 0.5 else rng.random() < NEGATION_PROBABILITY
            if rng.random() < 0.5:
                first, second, first_negated, second_negated = second, first, second_negated, first_negated
            s1 = realize(first, first_negated, rng.choice(frames), rng)
            s2 = realize(second, second_negated, rng.choice(frames), rng)
            if s1 == s2 or s1 in seen or s2 in seen:
                continue
            used.update((s1, s2))
            rows.append((s1, s2, overlap_label(first, second, first_negated, second_negated)))
        seen |= used
        out[split] = pd.DataFrame(rows, columns=list(COLUMNS))
    return out


# --------------------------------------------------------------------------------------------------
# Paper profile: STS-B and AllNLI from local files in their published formats.

STSB_ORIGINAL_FILES = {"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test.csv"}
STSB_SBERT_FILE = "stsbenchmark.tsv.gz"
ALLNLI_FILE = "AllNLI.tsv.gz"
# The scores sentence-transformers' all-nli "pair-score" subset gives the three NLI labels.
NLI_LABEL_SCORES = {"entailment": 1.0, "neutral": 0.5, "contradiction": 0.0}


def stsb_format(data_dir: str | Path) -> str:
    """Which STS-B distribution ``data_dir`` holds ("original" or "sbert"); one clear error if neither."""
    path = Path(data_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"STS-B data_dir {str(path)!r} does not exist or is not a directory")
    if all((path / name).is_file() for name in STSB_ORIGINAL_FILES.values()):
        return "original"
    if (path / STSB_SBERT_FILE).is_file():
        return "sbert"
    raise FileNotFoundError(
        f"STS-B data_dir {str(path)!r} holds neither {', '.join(STSB_ORIGINAL_FILES.values())} "
        f"(the STS benchmark release) nor {STSB_SBERT_FILE} (sentence-transformers' copy)"
    )


def _open_text(path: Path):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _read_original_stsb(path: Path) -> pd.DataFrame:
    """STS benchmark release: tab-separated genre, file, year, id, score, sentence1, sentence2[, source...].

    Unquoted text (sentences contain quote characters), so the csv module runs with QUOTE_NONE.
    """
    rows = []
    with _open_text(path) as f:
        for line_no, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if len(fields) < 7:
                raise ValueError(f"{path}:{line_no}: expected >= 7 tab-separated fields, got {len(fields)}")
            rows.append((fields[5], fields[6], float(fields[4])))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _read_sbert_stsb(path: Path) -> dict[str, pd.DataFrame]:
    """sentence-transformers' stsbenchmark.tsv.gz: header split, genre, dataset, year, sid, score, s1, s2."""
    with _open_text(path) as f:
        table = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    missing = {"split", "score", "sentence1", "sentence2"} - set(table[0] if table else {})
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    out = {}
    for split in SPLITS:
        rows = [(r["sentence1"], r["sentence2"], float(r["score"])) for r in table if r["split"] == split]
        out[split] = pd.DataFrame(rows, columns=list(COLUMNS))
    return out


def load_stsb(data_dir: str | Path) -> dict[str, pd.DataFrame]:
    """STS-B train/dev/test as DataFrame(sentence1, sentence2, score in [0, 5])."""
    path = Path(data_dir)
    if stsb_format(path) == "original":
        return {split: _read_original_stsb(path / name) for split, name in STSB_ORIGINAL_FILES.items()}
    return _read_sbert_stsb(path / STSB_SBERT_FILE)


def load_allnli(path: str | Path, max_pairs: int = 0, seed: int = 0) -> pd.DataFrame:
    """AllNLI (SNLI + MultiNLI) train pairs as DataFrame(sentence1, sentence2, score in [0, 5]).

    Format: sentence-transformers' AllNLI.tsv.gz (header split, dataset, filename, sentence1, sentence2,
    label). Labels map to similarity with NLI_LABEL_SCORES (x5 to STS-B's scale). ``max_pairs`` > 0 keeps
    a seeded random subset.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"AllNLI file {str(path)!r} not found")
    with _open_text(path) as f:
        table = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    missing = {"split", "sentence1", "sentence2", "label"} - set(table[0] if table else {})
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    rows = []
    for r in table:
        if r["split"] != "train":
            continue
        if r["label"] not in NLI_LABEL_SCORES:
            raise ValueError(
                f"{path}: unknown NLI label {r['label']!r}; known: {', '.join(NLI_LABEL_SCORES)}"
            )
        rows.append((r["sentence1"], r["sentence2"], NLI_LABEL_SCORES[r["label"]] * MAX_SCORE))
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    if max_pairs and len(frame) > max_pairs:
        frame = frame.sample(n=max_pairs, random_state=seed).reset_index(drop=True)
    return frame


# --------------------------------------------------------------------------------------------------
# A user's own pairs file in STS-B's format.

STSB_COLUMNS = {"score": 4, "sentence1": 5, "sentence2": 6}  # the STS benchmark's headerless layout


@dataclass(frozen=True)
class PairsLayout:
    tab: bool
    index: dict[str, int]  # column -> field position
    header: bool
    description: str


def pairs_layout(path: Path) -> PairsLayout:
    """How a pairs file is laid out, from its first line; ValueError for a missing column."""
    with _open_text(path) as f:
        first = f.readline()
    if not first.strip():
        raise ValueError(f"{path}: the first line is empty; expected a header naming {', '.join(COLUMNS)}")
    tab = "\t" in first
    line = first.rstrip("\r\n")
    names = [c.strip().lower() for c in (line.split("\t") if tab else next(csv.reader([line])))]
    if set(COLUMNS) & set(names):
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise ValueError(
                f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
                f"the header has {names} (needed: {', '.join(COLUMNS)})"
            )
        sep = "tab-separated" if tab else "comma-separated"
        return PairsLayout(tab, {c: names.index(c) for c in COLUMNS}, True, f"{sep}, with a header")
    if tab and len(names) >= 7:
        return PairsLayout(tab, STSB_COLUMNS, False, "the STS benchmark's headerless layout")
    raise ValueError(
        f"{path}: missing columns: expected a header naming {', '.join(COLUMNS)} (tab- or "
        "comma-separated), or the STS benchmark's headerless layout (tab-separated genre, file, year, "
        f"id, score, sentence1, sentence2); the first line has {len(names)} field(s)"
    )


def _pair_rows(path: Path, layout: PairsLayout):
    """(line number, sentence1, sentence2, score text) of every non-blank row."""
    index, width = layout.index, max(layout.index.values()) + 1
    with _open_text(path) as f:
        reader = (
            csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if layout.tab
            else csv.reader(f, delimiter=",")
        )
        if layout.header:
            next(reader, None)
        for fields in reader:
            if not any(x.strip() for x in fields):
                continue
            if len(fields) < width:
                raise ValueError(
                    f"{path}, line {reader.line_num}: expected at least {width} columns, got {len(fields)}"
                )
            yield (
                reader.line_num,
                fields[index["sentence1"]],
                fields[index["sentence2"]],
                fields[index["score"]],
            )


def read_pairs_file(path: str | Path) -> pd.DataFrame:
    """A user's pairs in STS-B's format as DataFrame(sentence1, sentence2, score in [0, 5]); one clear
    ValueError (file and line) for a missing column, an empty sentence, a score that is not a number or
    lies outside [0, 5], fewer than 2 pairs, or scores that are all equal (no correlation)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file {str(path)!r} not found")
    layout, rows = pairs_layout(path), []
    for line, s1, s2, raw in _pair_rows(path, layout):
        for name, text in (("sentence1", s1), ("sentence2", s2)):
            if not text.strip():
                raise ValueError(f"{path}, line {line}: {name} is empty")
        try:
            score = float(raw)
        except ValueError:
            raise ValueError(f"{path}, line {line}: score {raw!r} is not a number") from None
        if not (math.isfinite(score) and 0.0 <= score <= MAX_SCORE):
            raise ValueError(f"{path}, line {line}: score {raw.strip()} is outside [0, {MAX_SCORE:g}]")
        rows.append((s1, s2, score))
    if len(rows) < 2:
        raise ValueError(f"{path}: {len(rows)} pair(s); a correlation needs at least 2")
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    if frame["score"].nunique() < 2:
        raise ValueError(f"{path}: every score is {rows[0][2]:g}: no correlation can be computed")
    frame.attrs["layout"] = layout.description
    return frame


@functools.lru_cache(maxsize=16)
def _checked(path: str, mtime_ns: int, size: int) -> int:
    return len(read_pairs_file(path))


def check_pairs_file(path: str | Path) -> int:
    """``read_pairs_file``'s checks before any compute (once per file version in a process); the number
    of pairs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file {str(path)!r} not found")
    stat = path.stat()
    return _checked(str(path), stat.st_mtime_ns, stat.st_size)
