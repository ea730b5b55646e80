"""Retrieval data in the formats the real benchmarks ship in, read from local folders (no network).

- **BEIR** (also MS MARCO dev, the multi-hop sets converted to it, and embsym's offline sets):
  ``corpus.jsonl`` ({"_id", "title", "text"}), ``queries.jsonl`` ({"_id", "text"}),
  ``qrels/<split>.tsv`` (header ``query-id  corpus-id  score``). CQADupStack is a folder of
  BEIR sub-folders (one per forum), merged here with prefixed ids.
- **TREC / MS MARCO passage** (TREC-DL 19/20): ``collection.tsv`` (pid \\t text), ``queries.tsv``
  (qid \\t text) and ``qrels.txt`` (``qid 0 pid rel``, graded).
- **BRIGHT** (xlangai/BRIGHT as saved from the hub): ``examples/<task>.jsonl|parquet`` ({"id",
  "query", "gold_ids", "excluded_ids"}) and ``documents/<task>.jsonl|parquet`` ({"id", "content"}).
- **MS MARCO v1.1 QA** (the training pairs): rows {"query", "passages": {"is_selected": [...],
  "passage_text": [...]}} as jsonl or parquet (the hub's ``ms_marco`` v1.1 files).
- **QA for RAG** (NQ / HotpotQA / TriviaQA): ``qa.jsonl`` rows {"_id", "question", "answers": [...]}
  beside a BEIR ``corpus.jsonl`` of passages.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RetrievalSet:
    """One evaluation set: documents, queries, graded relevance judgments (qrels), and pairs to skip."""

    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    excluded: dict[str, set[str]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)  # what a user should know about the data
    # CQADupStack: the forums, each searched on its own (this set's corpus/queries/qrels are their union,
    # ids prefixed with the forum, for sizes and subsampling)
    parts: list[RetrievalSet] = field(default_factory=list)

    def doc_ids(self) -> list[str]:
        return list(self.corpus)

    def doc_texts(self, prefix: str = "") -> list[str]:
        return [prefix + doc_text(doc) for doc in self.corpus.values()]

    def query_ids(self) -> list[str]:
        """Queries that have at least one relevant document (the ones that can be scored)."""
        return [qid for qid in self.queries if any(r > 0 for r in self.qrels.get(qid, {}).values())]

    def sizes(self) -> dict[str, int]:
        return {
            "queries": len(self.query_ids()),
            "corpus": len(self.corpus),
            "qrels": sum(len(v) for v in self.qrels.values()),
        }


def doc_text(doc: dict[str, str]) -> str:
    """BEIR's convention: title and text joined by a space when there is a title."""
    title, text = doc.get("title", "") or "", doc.get("text", "") or ""
    return f"{title} {text}".strip() if title else text


def _need(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"missing retrieval data file: {path}")
    return path


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(_need(Path(path)), encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {line_no}: not JSON ({e.msg})") from None


def _records(path: Path, keys: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The rows of a BEIR jsonl file, each checked to have ``keys`` (ValueError naming the line)."""
    for line_no, row in enumerate(read_jsonl(path), 1):
        if not isinstance(row, dict) or not set(keys) <= set(row):
            raise ValueError(
                f"{path}, record {line_no}: expected an object with {', '.join(map(repr, keys))}"
            )
        yield row


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def _read_table(path: Path) -> list[dict[str, Any]]:
    """Rows of a jsonl or parquet file (BRIGHT and MS MARCO ship as either)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(_need(path)).to_dict("records")
    return list(read_jsonl(path))


def _find_table(folder: Path, stem: str) -> Path:
    for suffix in (".jsonl", ".parquet"):
        if (folder / f"{stem}{suffix}").exists():
            return folder / f"{stem}{suffix}"
    raise FileNotFoundError(f"missing retrieval data file: {folder / stem}.jsonl (or .parquet)")


QRELS_HEADER = ("query-id", "corpus-id", "score")


def _check_qrels_header(path: Path, header: list[str] | None) -> None:
    if header is None or [h.strip() for h in header[:2]] != list(QRELS_HEADER[:2]):
        raise ValueError(f"{path}: expected a BEIR qrels header 'query-id\\tcorpus-id\\tscore', got {header}")


def read_qrels_tsv(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(_need(Path(path)), encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        _check_qrels_header(path, header)
        for row in reader:
            if not row:
                continue
            if len(row) < 3:
                raise ValueError(
                    f"{path}, line {reader.line_num}: expected query-id, corpus-id and score "
                    f"(tab-separated), got {row}"
                )
            try:
                score = int(float(row[2]))
            except ValueError:
                raise ValueError(
                    f"{path}, line {reader.line_num}: score {row[2]!r} is not a number"
                ) from None
            qrels.setdefault(row[0], {})[row[1]] = score
    return qrels


def check_beir_folder(folder: Path, split: str = "test") -> None:
    """Cheap checks, before any compute, that ``folder`` is in BEIR's format: the three files exist,
    the qrels file has BEIR's header, and the first record of each jsonl file is an object with
    ``_id`` and ``text``. ValueError saying what is wrong (loading checks every line)."""
    folder = Path(folder)
    needed = ["corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"]
    missing = [n for n in needed if not (folder / n).is_file()]
    if missing:
        raise ValueError(
            f"missing {', '.join(missing)} in {folder} (BEIR format: corpus.jsonl, queries.jsonl, "
            f"qrels/{split}.tsv)"
        )
    with open(folder / "qrels" / f"{split}.tsv", encoding="utf-8") as f:
        _check_qrels_header(folder / "qrels" / f"{split}.tsv", next(csv.reader(f, delimiter="\t"), None))
    for name in ("corpus.jsonl", "queries.jsonl"):
        path = folder / name
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {line_no}: not JSON ({e.msg})") from None
                if not isinstance(row, dict) or not {"_id", "text"} <= set(row):
                    raise ValueError(
                        f"{path}, line {line_no}: expected an object with '_id' and 'text', got "
                        f"{sorted(row) if isinstance(row, dict) else type(row).__name__}"
                    )
                break
            else:
                raise ValueError(f"{path} is empty")


def write_beir(
    folder: Path,
    corpus: dict[str, dict[str, str]],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    split: str = "test",
) -> Path:
    folder = Path(folder)
    write_jsonl(
        folder / "corpus.jsonl",
        ({"_id": i, "title": d.get("title", ""), "text": d["text"]} for i, d in corpus.items()),
    )
    write_jsonl(folder / "queries.jsonl", ({"_id": i, "text": t} for i, t in queries.items()))
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for did, rel in docs.items():
                f.write(f"{qid}\t{did}\t{rel}\n")
    return folder


def load_beir(folder: Path, split: str = "test", name: str | None = None) -> RetrievalSet:
    """A BEIR-format folder; a CQADupStack-style folder of BEIR sub-folders is merged."""
    folder = Path(folder)
    if not (folder / "corpus.jsonl").exists():
        subsets = (
            sorted(p for p in folder.iterdir() if (p / "corpus.jsonl").exists()) if folder.is_dir() else []
        )
        if not subsets:
            raise FileNotFoundError(f"missing retrieval data file: {folder / 'corpus.jsonl'}")
        return merge_parts([load_beir(p, split, p.name) for p in subsets], name or folder.name)
    corpus = {
        str(r["_id"]): {"title": r.get("title", "") or "", "text": r.get("text", "") or ""}
        for r in _records(folder / "corpus.jsonl", ("_id",))
    }
    queries = {str(r["_id"]): r["text"] for r in _records(folder / "queries.jsonl", ("_id", "text"))}
    qrels = read_qrels_tsv(folder / "qrels" / f"{split}.tsv")
    queries = {qid: text for qid, text in queries.items() if qid in qrels}
    return RetrievalSet(name or folder.name, corpus, queries, qrels)


def merge_parts(parts: list[RetrievalSet], name: str) -> RetrievalSet:
    """CQADupStack: the union of its forums with ids prefixed by the forum, keeping the forums themselves
    as ``parts``: the evaluation searches each forum on its own and averages them, as BEIR reports it."""
    corpus, queries, qrels = {}, {}, {}
    for p in parts:
        corpus.update({f"{p.name}/{i}": d for i, d in p.corpus.items()})
        queries.update({f"{p.name}/{i}": t for i, t in p.queries.items()})
        qrels.update(
            {f"{p.name}/{q}": {f"{p.name}/{d}": r for d, r in docs.items()} for q, docs in p.qrels.items()}
        )
    return RetrievalSet(name, corpus, queries, qrels, parts=list(parts))


def _read_tsv_pairs(path: Path) -> dict[str, str]:
    with open(_need(Path(path)), encoding="utf-8") as f:
        return {
            row[0]: row[1] for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if len(row) >= 2
        }


def load_trec(folder: Path, name: str | None = None, collection: Path | None = None) -> RetrievalSet:
    """TREC-DL style: ``queries.tsv``, ``qrels.txt`` (qid Q0 pid rel) and the MS MARCO ``collection.tsv``
    (in ``folder`` or given). Only judged queries are kept, as in the TREC-DL evaluations."""
    folder = Path(folder)
    qrels: dict[str, dict[str, int]] = {}
    with open(_need(folder / "qrels.txt"), encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4:
                qrels.setdefault(parts[0], {})[parts[2]] = int(parts[3])
    queries = {q: t for q, t in _read_tsv_pairs(folder / "queries.tsv").items() if q in qrels}
    texts = _read_tsv_pairs(collection or folder / "collection.tsv")
    corpus = {pid: {"title": "", "text": text} for pid, text in texts.items()}
    return RetrievalSet(name or folder.name, corpus, queries, qrels)


def load_bright(folder: Path, task: str) -> RetrievalSet:
    """One BRIGHT task. Gold documents are relevant (1); ``excluded_ids`` are dropped from that query's
    ranking, as BRIGHT's own evaluation does."""
    folder = Path(folder)
    examples = _read_table(_find_table(folder / "examples", task))
    documents = _read_table(_find_table(folder / "documents", task))
    corpus = {str(d["id"]): {"title": "", "text": d["content"]} for d in documents}
    queries, qrels, excluded = {}, {}, {}
    for ex in examples:
        qid = str(ex["id"])
        queries[qid] = ex["query"]
        qrels[qid] = {str(g): 1 for g in ex["gold_ids"]}
        excluded[qid] = {str(e) for e in (ex.get("excluded_ids") or []) if str(e) != "N/A"}
    return RetrievalSet(task, corpus, queries, qrels, excluded)


def _answered_qa_rows(path: Path):
    """MS MARCO v1.1 QA rows that have a selected passage: (query id, query, passage texts, selected
    flags); rows without one (no answer in the passages) are skipped."""
    for i, row in enumerate(_read_table(Path(path))):
        passages = row["passages"]
        selected = list(passages["is_selected"])
        if 1 in selected:
            yield str(row.get("query_id", i)), row["query"], list(passages["passage_text"]), selected


def load_msmarco_qa_pairs(path: Path, limit: int = 0) -> list[tuple[str, str]]:
    """(query, selected passage) pairs from MS MARCO v1.1 QA rows; one pair per query (the first
    selected passage)."""
    pairs = []
    for _, query, texts, selected in _answered_qa_rows(path):
        pairs.append((query, texts[selected.index(1)]))
        if limit and len(pairs) >= limit:
            break
    return pairs


def load_msmarco_qa_set(path: Path, name: str) -> RetrievalSet:
    """MS MARCO v1.1 QA rows as a retrieval set: each query ranks the passages of every row, its
    selected passages relevant (1)."""
    corpus, queries, qrels = {}, {}, {}
    for qid, query, texts, selected in _answered_qa_rows(path):
        queries[qid] = query
        qrels[qid] = {}
        for j, (text, chosen) in enumerate(zip(texts, selected, strict=True)):
            corpus[f"{qid}:{j}"] = {"title": "", "text": text}
            if chosen:
                qrels[qid][f"{qid}:{j}"] = 1
    return RetrievalSet(name, corpus, queries, qrels)


def beir_training_pairs(folder: Path, split: str = "train", limit: int = 0) -> list[tuple[str, str]]:
    """(query, relevant document text) pairs from a BEIR folder's qrels split, in qrels order."""
    data = load_beir(folder, split)
    pairs = [
        (data.queries[q], doc_text(data.corpus[d]))
        for q, docs in data.qrels.items()
        if q in data.queries
        for d, rel in docs.items()
        if rel > 0 and d in data.corpus
    ]
    return pairs[:limit] if limit else pairs


def load_qa(folder: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    """RAG questions (``qa.jsonl``: _id, question, answers) and their passage corpus (``corpus.jsonl``)."""
    folder = Path(folder)
    questions = [
        {"_id": str(r["_id"]), "question": r["question"], "answers": list(r["answers"])}
        for r in read_jsonl(folder / "qa.jsonl")
    ]
    corpus = {
        str(r["_id"]): {"title": r.get("title", "") or "", "text": r.get("text", "") or ""}
        for r in read_jsonl(folder / "corpus.jsonl")
    }
    return questions, corpus
