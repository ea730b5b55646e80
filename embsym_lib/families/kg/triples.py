"""A ``path:`` KG dataset's triple files: read them strictly (one clear error with the file and line for a
malformed row, before any compute), and count what PyKEEN keeps of each split. Pure Python, no PyKEEN
import: the schema runs these checks.

The format (what ``FORMAT`` says, in the error messages too): UTF-8 text, one triple per line,
``head<TAB>relation<TAB>tail``, exactly three non-empty fields.

- Blank lines (empty or only spaces) are skipped, as PyKEEN's reader skips them; ``\\n``, ``\\r\\n``
  line ends and a missing final newline are fine, and so is a UTF-8 byte-order mark.
- No header line: a first (non-blank) line that reads like one (``head relation tail``, ``subject predicate object``,
  ``h r t``, ...) is refused, since PyKEEN would take it as a triple.
- No comments: a line starting with ``#`` is refused (PyKEEN would take it as a triple).
- A field with leading or trailing whitespace is refused (PyKEEN keeps it: ``"Paris "`` would be an
  entity of its own), and so is a field starting with ``"`` (PyKEEN's reader, pandas, takes it as CSV
  quoting and drops the quotes); a ``"`` inside a field is kept as it is.

What PyKEEN then does with well-formed triples, and ``split_report`` counts exactly: a validation or test
triple whose head, relation or tail never occurs in the training file is dropped, and repeated triples of a
split are kept once.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from ...records import PROJECT_ROOT

FORMAT = "head<TAB>relation<TAB>tail, one triple per line, no header, no comments"
Triple = tuple[str, str, str]
HEADER_WORDS: tuple[frozenset[str], ...] = (
    frozenset({"head", "h", "subject", "subj", "s", "source", "src", "head_id", "head_label"}),
    frozenset({"relation", "rel", "r", "predicate", "pred", "p", "edge", "relation_id", "relation_label"}),
    frozenset({"tail", "t", "object", "obj", "o", "target", "dst", "tail_id", "tail_label"}),
)
EXAMPLES = 5  # dropped triples listed per split


class TripleFileError(ValueError):
    """A malformed line in a triple file; the message names the file and the line."""


def shown(path: Path) -> str:
    """A path as a user reads it: relative to the project root when inside it."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT.resolve()))
    except ValueError:
        return str(path)


def _line_problem(fields: list[str], first: bool) -> str | None:
    if fields[0].startswith("#"):
        return "starts with '#' (comments are not supported)"
    if len(fields) != 3:
        return f"has {len(fields)} tab-separated field{'s' * (len(fields) != 1)}, expected 3"
    for name, field in zip(("head", "relation", "tail"), fields, strict=True):
        if not field:
            return f"has an empty {name}"
        if field != field.strip():
            return f"has whitespace around its {name} {field!r}"
        if field.startswith('"'):
            return f"has a {name} starting with '\"' ({field!r}), which PyKEEN would read as CSV quoting"
    if first and all(f.lower() in words for f, words in zip(fields, HEADER_WORDS, strict=True)):
        return "looks like a header line (the files have none: remove it)"
    return None


def read_triples(path: Path) -> tuple[list[Triple], list[int]]:
    """The triples of one file and their line numbers (1-based); ``TripleFileError`` at the first malformed
    line."""
    triples: list[Triple] = []
    lines: list[int] = []
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline=None) as f:
        for number, raw in enumerate(f, start=1):
            line = raw.rstrip("\n")
            if not line.strip(" "):  # PyKEEN's reader skips these (and only these) lines
                continue
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:
                raise TripleFileError(f"{shown(path)} line {number} is not UTF-8 text") from None
            fields = line.split("\t")
            problem = _line_problem(fields, first=not triples)
            if problem:
                raise TripleFileError(f"{shown(path)} line {number} {problem}; the format is {FORMAT}")
            triples.append((fields[0], fields[1], fields[2]))
            lines.append(number)
    if not triples:
        raise TripleFileError(f"{shown(path)} has no triples; the format is {FORMAT}")
    return triples, lines


def vocabulary(triples: Iterable[Triple]) -> tuple[set[str], set[str]]:
    """(entities, relations) of the training triples: what PyKEEN can map."""
    entities: set[str] = set()
    relations: set[str] = set()
    for h, r, t in triples:
        entities.update((h, t))
        relations.add(r)
    return entities, relations


def split_report(
    triples: list[Triple], lines: list[int], entities: set[str], relations: set[str]
) -> dict[str, object]:
    """What PyKEEN keeps of one split, mapped with the training vocabulary: ``file_triples`` (well-formed
    lines), ``dropped`` (an entity or relation not in training; of which ``unseen_entity`` have an unseen
    head or tail, ``unseen_relation`` an unseen relation), ``duplicates`` (repeats of a kept triple),
    ``kept`` (distinct triples PyKEEN maps), ``kept_triples`` (that set) and up to ``EXAMPLES`` dropped
    triples with their line and what is unseen."""
    kept: list[Triple] = []
    examples: list[dict[str, object]] = []
    unseen_entity = unseen_relation = 0
    for triple, line in zip(triples, lines, strict=True):
        h, r, t = triple
        unseen = [
            side
            for side, ok in (("head", h in entities), ("relation", r in relations), ("tail", t in entities))
            if not ok
        ]
        if not unseen:
            kept.append(triple)
            continue
        unseen_entity += "head" in unseen or "tail" in unseen
        unseen_relation += "relation" in unseen
        if len(examples) < EXAMPLES:
            examples.append({"line": line, "triple": list(triple), "unseen": unseen})
    distinct = set(kept)
    return {
        "file_triples": len(triples),
        "dropped": len(triples) - len(kept),
        "unseen_entity": unseen_entity,
        "unseen_relation": unseen_relation,
        "duplicates": len(kept) - len(distinct),
        "kept": len(distinct),
        "kept_triples": distinct,
        "examples": examples,
    }


def folder_report(files: dict[str, Path]) -> dict[str, dict[str, object]]:
    """``split_report`` of every split of a folder (``files``: training/validation/testing -> path)."""
    read = {split: read_triples(path) for split, path in files.items()}
    entities, relations = vocabulary(read["training"][0])
    return {split: split_report(*read[split], entities, relations) for split in files}


@functools.lru_cache(maxsize=8)
def _checked(signature: tuple[tuple[str, str, int, int], ...]) -> None:
    files = {split: Path(path) for split, path, _, _ in signature}
    report = folder_report(files)
    test = report["testing"]
    if not test["kept"]:
        raise TripleFileError(
            f"none of the {test['file_triples']} triples of {shown(files['testing'])} has its head, relation "
            f"and tail in {shown(files['training'])}: PyKEEN would drop them all and there would be nothing "
            "to evaluate"
        )


def check_files(files: dict[str, Path]) -> None:
    """Read every split strictly and refuse a test split PyKEEN would empty; cached while the files are
    unchanged (a sweep validates every grid point)."""
    signature = []
    for split, path in files.items():
        stat = path.stat()
        signature.append((split, str(path), stat.st_size, stat.st_mtime_ns))
    _checked(tuple(signature))
