"""Retrieval datasets: embsym's offline "pydoc" benchmark, and the registry of the paper's datasets.

**pydoc** (offline default). Every machine that installed the pinned environment has the same Python
source files, so a retrieval benchmark derived from their docstrings is identical everywhere. Source
files are *parsed* (``ast``), never imported. For each public function, method or class with a
docstring: query = the docstring's summary (its first paragraph, one line); relevant document = the
rest of the docstring (the body), titled with the object's name. One relevant document per query.

- in-domain (scientific Python: numpy, scipy, scikit-learn, pandas, networkx): split by a hash of
  the object's qualified name into train pairs, a dev set (checkpoint selection), a held-out set
  (the Fisher predictor; no run trains on it) and an in-domain test set;
- out-of-domain test sets from clearly different package families: the Python standard library,
  deep-learning packages (torch, transformers, timm, pykeen, open_clip, accelerate) and web/tooling
  packages (tornado, jinja2, jupyter_server, werkzeug, requests, urllib3, httpx, sqlalchemy, click,
  pygments).

Each test corpus = its queries' relevant documents plus distractor bodies from the same domain. All
sets are written in BEIR's format, so the loader that reads them also reads real BEIR data. The
in-domain test folder also has ``qa.jsonl`` for the RAG code path (question = summary, answer = the
object's name). The generated folder lives under ``records.generated_data_dir("retrieval")``
(``$EMBSYM_DATA/retrieval``, else the sweep's outputs folder's ``data/retrieval``), made once and reused
by every run of a sweep.

**MS MARCO passage ranking's judged training pairs** (``data_source: msmarco_passage``, the paper's
E5-500K arm, v1 Table 16): ``msmarco_passage/qrels.train.tsv`` (qid 0 pid 1), ``queries.train.tsv``
(qid \\t query) and ``collection.tsv`` (pid \\t passage). The judged training queries are split by a hash
of their id (``msmarco_passage_split``): 2,500 dev queries (checkpoint selection), 2,500 held-out queries
(the Fisher predictor) and the rest (~498K) for training, one pair per query (its first judged passage);
a training query whose text is a dev or held-out query's is dropped too. The 8.8M-passage collection is
read in one pass that keeps only the passages needed (and stops once it has them all).

**A user's own BEIR folder** is a test set written ``path:<folder>`` (``user_test_set``): the folder
holds ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/test.tsv``; the set is named after the folder and
is a benchmark group of its own, outside the paper's groups and their means.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..records import generated_data_dir, project_path
from . import beir

GENERATOR_VERSION = 1

PYDOC_DOMAINS: dict[str, tuple[str, ...]] = {
    "scientific": ("numpy", "scipy", "sklearn", "pandas", "networkx"),
    "stdlib": ("<stdlib>",),
    "deeplearning": ("torch", "transformers", "timm", "pykeen", "open_clip", "accelerate"),
    "web": (
        "tornado",
        "jinja2",
        "jupyter_server",
        "werkzeug",
        "requests",
        "urllib3",
        "httpx",
        "sqlalchemy",
        "click",
        "pygments",
    ),
}
IN_DOMAIN = "scientific"
PYDOC_TEST_SETS: tuple[str, ...] = ("pydoc_scientific", "pydoc_stdlib", "pydoc_deeplearning", "pydoc_web")

# The paper's evaluation sets (folder names under data_dir) and the benchmark group each averages into.
BEIR14 = (
    "arguana",
    "climate-fever",
    "cqadupstack",
    "dbpedia-entity",
    "fever",
    "fiqa",
    "hotpotqa",
    "nfcorpus",
    "nq",
    "quora",
    "scidocs",
    "scifact",
    "trec-covid",
    "webis-touche2020",
)
BRIGHT12 = (
    "aops",
    "biology",
    "earth_science",
    "economics",
    "leetcode",
    "pony",
    "psychology",
    "robotics",
    "stackoverflow",
    "sustainable_living",
    "theoremqa_questions",
    "theoremqa_theorems",
)
MULTIHOP4 = ("2wikimultihopqa", "musique", "novelhopqa", "hotpotqa_multihop")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    group: str
    in_domain: bool | None  # None: a user's folder, neither in- nor out-of-domain
    loader: str  # pydoc | beir | trec | bright | folder (a user's BEIR folder, ``path:<folder>``)
    split: str = "test"
    path: str = ""  # the user's folder (loader "folder")

    @property
    def user(self) -> bool:
        return self.loader == "folder"


def _registry() -> dict[str, DatasetInfo]:
    out = {
        name: DatasetInfo(
            name,
            "in_domain" if name == f"pydoc_{IN_DOMAIN}" else "ood",
            name == f"pydoc_{IN_DOMAIN}",
            "pydoc",
        )
        for name in PYDOC_TEST_SETS
    }
    out["msmarco_dev"] = DatasetInfo("msmarco_dev", "msmarco_dev", True, "beir", "dev")
    out["trec_dl19"] = DatasetInfo("trec_dl19", "trec_dl19", True, "trec")
    out["trec_dl20"] = DatasetInfo("trec_dl20", "trec_dl20", True, "trec")
    out.update({n: DatasetInfo(n, "beir14", False, "beir") for n in BEIR14})
    out.update({n: DatasetInfo(n, "bright12", False, "bright") for n in BRIGHT12})
    out.update({n: DatasetInfo(n, "multihop4", False, "beir") for n in MULTIHOP4})
    return out


DATASETS: dict[str, DatasetInfo] = _registry()
TRAIN_SOURCES = ("pydoc", "msmarco_qa", "msmarco_passage")
RAG_SETS = ("pydoc_scientific", "nq", "hotpotqa", "triviaqa")


USER_PREFIX = "path:"
# Metric suffixes that are aggregates over groups: a user's folder may not be named like one of them.
AGGREGATES = ("id", "ood", "mean", "user")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_dataset(name: str) -> DatasetInfo:
    if name not in DATASETS:
        hint = (
            f"; to evaluate your own BEIR folder write {USER_PREFIX + name!r}"
            if "/" in name or name.startswith((".", "~"))
            else f"; or {USER_PREFIX}<folder> for your own BEIR folder"
        )
        raise ValueError(
            f"unknown retrieval dataset {name!r}; valid datasets are: {', '.join(DATASETS)}{hint}"
        )
    return DATASETS[name]


def user_test_set(entry: str) -> DatasetInfo:
    """A test set ``path:<folder>``: the user's BEIR folder (relative paths: to the project root), named
    after the folder, in a benchmark group of its own. Checks the name only; ``check_user_folder``
    checks the files."""
    raw = entry[len(USER_PREFIX) :].strip()
    if not raw:
        raise ValueError(f"test set {entry!r} names no folder; write {USER_PREFIX}/path/to/your/beir/folder")
    folder = Path(os.path.normpath(project_path(raw)))
    name = folder.name
    if not _PLAIN_NAME.match(name):
        raise ValueError(
            f"test set {entry!r}: the folder's name {name!r} names its metrics (ndcg10_<name>); use a "
            "folder named with letters, digits, '.', '_' or '-' (a symbolic link will do)"
        )
    taken = set(DATASETS) | {i.group for i in DATASETS.values()} | set(AGGREGATES)
    if name in taken:
        raise ValueError(
            f"test set {entry!r}: a folder named {name!r} would mix its results with the paper's "
            f"{name!r} metrics; rename the folder (or link it under another name)"
        )
    return DatasetInfo(name, name, None, "folder", "test", str(folder))


def resolve_test_set(entry: str) -> DatasetInfo:
    """A ``test_sets`` entry: a registry name, or ``path:<folder>`` (a user's BEIR folder)."""
    return user_test_set(entry) if entry.startswith(USER_PREFIX) else check_dataset(entry)


def check_test_sets(entries: list[str]) -> list[DatasetInfo]:
    """Every ``test_sets`` entry resolved; one clear error for an unknown name or two sets that would
    report under one name. Touches no file."""
    infos = [resolve_test_set(e) for e in entries]
    seen: dict[str, str] = {}
    for entry, info in zip(entries, infos, strict=True):
        if info.name in seen:
            raise ValueError(
                f"test sets {seen[info.name]!r} and {entry!r} would both report as {info.name!r}"
            )
        seen[info.name] = entry
    return infos


def check_user_folder(info: DatasetInfo) -> None:
    """A user's folder exists and is in BEIR's format (``beir.check_beir_folder``); ValueError naming it."""
    folder = Path(info.path)
    where = f"test set {USER_PREFIX}{info.path}"
    if not folder.is_dir():
        raise ValueError(f"{where}: folder {str(folder)!r} does not exist")
    try:
        beir.check_beir_folder(folder, info.split)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


# ----------------------------------------------------------------------------------------------
# pydoc generation


@dataclass(frozen=True)
class PydocSizes:
    n_train: int = 2000
    n_dev_queries: int = 100
    dev_corpus: int = 400
    n_heldout: int = 256
    n_test_queries: int = 200
    test_corpus: int = 1000
    max_doc_chars: int = 1000


def _package_dirs(package: str) -> list[Path]:
    if package == "<stdlib>":
        return [Path(sysconfig.get_paths()["stdlib"])]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) for p in spec.submodule_search_locations]


_SKIP_DIRS = {
    "tests",
    "test",
    "testing",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "idlelib",
    "lib2to3",
    "_vendor",
    "vendor",
    "turtledemo",
    "ensurepip",
    "benchmarks",
}


def _source_files(package: str) -> list[tuple[str, Path]]:
    """(stable key, path) of the package's .py files, ordered by a hash of the key (not by disk order)."""
    files = []
    for root in _package_dirs(package):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
            for fn in filenames:
                if fn.endswith(".py"):
                    path = Path(dirpath) / fn
                    files.append((f"{package}/{path.relative_to(root).as_posix()}", path))
    return sorted(files, key=lambda kp: _hash(kp[0]))


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


_WS = re.compile(r"\s+")


def split_docstring(doc: str, max_doc_chars: int = 1000) -> tuple[str, str] | None:
    """(summary line, body) of a docstring, or None when it is not a usable query/document pair."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", doc.strip()) if p.strip()]
    if len(paragraphs) < 2:
        return None
    summary = _WS.sub(" ", paragraphs[0]).strip()
    body = _WS.sub(" ", " ".join(paragraphs[1:])).strip()
    n_words = len(summary.split())
    if not 4 <= n_words <= 40 or len(body) < 100 or not re.search(r"[A-Za-z]", summary):
        return None
    if len(body) > max_doc_chars:
        body = body[:max_doc_chars].rsplit(" ", 1)[0]
    return summary, body


def extract_pairs(package: str, max_doc_chars: int = 1000, limit: int = 0) -> list[dict[str, str]]:
    """Public functions/classes with a usable docstring: {"key", "name", "query", "doc"}."""
    out: list[dict[str, str]] = []
    for key, path in _source_files(package):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        stack: list[tuple[ast.AST, str]] = [(tree, "")]
        while stack:
            node, prefix = stack.pop(0)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    qual = f"{prefix}{child.name}"
                    if not child.name.startswith("_"):
                        doc = ast.get_docstring(child, clean=True)
                        pair = split_docstring(doc, max_doc_chars) if doc else None
                        if pair:
                            out.append(
                                {"key": f"{key}:{qual}", "name": child.name, "query": pair[0], "doc": pair[1]}
                            )
                    if isinstance(child, ast.ClassDef):
                        stack.append((child, f"{qual}."))
        if limit and len(out) >= limit:
            break
    return out


def domain_pairs(domain: str, needed: int, max_doc_chars: int = 1000) -> list[dict[str, str]]:
    """Deduplicated pairs of one domain (no repeated summary or body), ordered by a hash of their key."""
    seen_key, seen_q, seen_d, pairs = set(), set(), set(), []
    for package in PYDOC_DOMAINS[domain]:
        # Cap each package so one huge package does not crowd out the rest of its domain.
        per_package = needed * 2 // len(PYDOC_DOMAINS[domain]) + 200
        for p in extract_pairs(package, max_doc_chars, limit=per_package):
            q, d = p["query"].lower(), p["doc"].lower()
            if p["key"] in seen_key or q in seen_q or d in seen_d:
                continue
            seen_key.add(p["key"])
            seen_q.add(q)
            seen_d.add(d)
            pairs.append(p)
    return sorted(pairs, key=lambda p: _hash(p["key"]))


def _as_beir(name: str, queries: list[dict[str, str]], distractors: list[dict[str, str]], corpus_size: int):
    docs = queries + distractors[: max(0, corpus_size - len(queries))]
    corpus = {"d" + _hash(p["key"])[:12]: {"title": p["name"], "text": p["doc"]} for p in docs}
    query_texts = {"q" + _hash(p["key"])[:12]: p["query"] for p in queries}
    qrels = {"q" + _hash(p["key"])[:12]: {"d" + _hash(p["key"])[:12]: 1} for p in queries}
    return corpus, query_texts, qrels


def environment_fingerprint() -> dict[str, str]:
    """What the generated data depends on: Python and the versions of every scanned package."""
    versions = {"python": sys.version.split()[0], "generator": str(GENERATOR_VERSION)}
    dist_of = {"sklearn": "scikit-learn", "open_clip": "open_clip_torch", "<stdlib>": None}
    for packages in PYDOC_DOMAINS.values():
        for pkg in packages:
            dist = dist_of.get(pkg, pkg)
            if dist:
                try:
                    versions[pkg] = metadata.version(dist)
                except metadata.PackageNotFoundError:
                    versions[pkg] = "absent"
    return versions


def pydoc_dir(sizes: PydocSizes = PydocSizes(), cache_dir: Path | None = None) -> Path:
    """Folder of the pydoc benchmark for these sizes, generated on first use (atomically) under
    ``cache_dir`` (default: ``records.generated_data_dir("retrieval")``, shared by a sweep's runs)."""
    fingerprint = {"sizes": sizes.__dict__, "env": environment_fingerprint()}
    digest = _hash(json.dumps(fingerprint, sort_keys=True))[:10]
    cache_dir = Path(cache_dir or generated_data_dir("retrieval"))
    target = cache_dir / f"pydoc-{digest}"
    if (target / "manifest.json").exists():
        return target
    tmp = cache_dir / f".tmp-pydoc-{digest}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    manifest = generate_pydoc(tmp, sizes)
    manifest["fingerprint"] = fingerprint
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first: its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def generate_pydoc(folder: Path, sizes: PydocSizes = PydocSizes()) -> dict:
    """Write the pydoc benchmark into ``folder``; returns its manifest (sizes of every set)."""
    folder = Path(folder)
    s = sizes
    manifest: dict = {"sets": {}}
    need_in = s.n_train + s.n_dev_queries + s.n_heldout + s.n_test_queries + s.test_corpus + s.dev_corpus
    pairs = domain_pairs(IN_DOMAIN, need_in, s.max_doc_chars)
    cut = [s.n_test_queries, s.n_dev_queries, s.n_heldout, s.n_train]
    bounds = [sum(cut[: i + 1]) for i in range(len(cut))]
    if len(pairs) < bounds[-1]:
        raise ValueError(
            f"pydoc: only {len(pairs)} in-domain pairs found, {bounds[-1]} needed; lower the sizes"
        )
    test_q, dev_q = pairs[: bounds[0]], pairs[bounds[0] : bounds[1]]
    heldout, train = pairs[bounds[1] : bounds[2]], pairs[bounds[2] : bounds[3]]
    distractors = pairs[bounds[3] :]
    half = len(distractors) // 2
    sets = {
        "pydoc_scientific": _as_beir("pydoc_scientific", test_q, distractors[:half], s.test_corpus),
        "dev": _as_beir("dev", dev_q, distractors[half:], s.dev_corpus),
        "heldout": _as_beir("heldout", heldout, [], 0),
        "train": _as_beir("train", train, [], 0),
    }
    for domain in PYDOC_DOMAINS:
        if domain == IN_DOMAIN:
            continue
        dom = domain_pairs(domain, s.n_test_queries + s.test_corpus, s.max_doc_chars)
        if len(dom) < s.n_test_queries + 1:
            raise ValueError(f"pydoc: only {len(dom)} pairs found for domain {domain!r}")
        sets[f"pydoc_{domain}"] = _as_beir(
            domain, dom[: s.n_test_queries], dom[s.n_test_queries :], s.test_corpus
        )
    for name, (corpus, queries, qrels) in sets.items():
        split = "train" if name == "train" else "dev" if name == "dev" else "test"
        beir.write_beir(folder / name, corpus, queries, qrels, split)
        manifest["sets"][name] = {"queries": len(queries), "corpus": len(corpus), "split": split}
    beir.write_jsonl(
        folder / "pydoc_scientific" / "qa.jsonl",
        ({"_id": "q" + _hash(p["key"])[:12], "question": p["query"], "answers": [p["name"]]} for p in test_q),
    )
    manifest["domains"] = {d: list(p) for d, p in PYDOC_DOMAINS.items()}
    return manifest


# ----------------------------------------------------------------------------------------------
# loading by name


def load_test_set(name: str, data_dir: str | Path) -> beir.RetrievalSet:
    """A test set by registry name, from the pydoc folder (offline) or ``data_dir`` (paper profile), or a
    user's BEIR folder (``path:<folder>``; ``load_user_set``)."""
    info = resolve_test_set(name)
    if info.user:
        return load_user_set(info)
    root = Path(data_dir)
    if info.loader == "pydoc":
        return beir.load_beir(root / name, "test", name)
    if info.loader == "beir":
        sub = (
            "multihop/" + name
            if info.group == "multihop4"
            else ("msmarco" if name == "msmarco_dev" else name)
        )
        return beir.load_beir(root / sub, info.split, name)
    if info.loader == "trec":
        return beir.load_trec(root / name, name, collection=root / "msmarco_passage" / "collection.tsv")
    return beir.load_bright(root / "bright", name)


def load_user_set(info: DatasetInfo) -> beir.RetrievalSet:
    """A user's BEIR folder (queries without a judgment are not scored, as in BEIR). ``notes`` says what
    the run could not use: judged queries missing from queries.jsonl, judgments of documents missing
    from corpus.jsonl, judged queries with no relevant document. No scorable query: one clear error."""
    folder = Path(info.path)
    data = beir.load_beir(folder, info.split, info.name)
    judged = set(data.qrels)
    data.notes = {
        "folder": str(folder),
        "judged_queries_without_text": len(judged - set(data.queries)),
        "judgments_of_missing_documents": sum(
            1 for docs in data.qrels.values() for d in docs if d not in data.corpus
        ),
        "queries_without_a_relevant_document": sum(
            1 for q in data.queries if not any(r > 0 for r in data.qrels.get(q, {}).values())
        ),
    }
    if not data.query_ids():
        raise ValueError(
            f"test set {USER_PREFIX}{folder}: no query of queries.jsonl has a relevant document in "
            f"qrels/{info.split}.tsv (score > 0): nothing to evaluate"
        )
    return data


def dataset_paths(name: str, data_dir: str | Path) -> list[Path]:
    """Files a test set needs (for validation before any compute)."""
    info = resolve_test_set(name)
    if info.user:
        folder = Path(info.path)
        return [folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{info.split}.tsv"]
    root = Path(data_dir)
    if info.loader == "pydoc":
        return [root / name / "corpus.jsonl"]
    if info.loader == "beir":
        sub = (
            "multihop/" + name
            if info.group == "multihop4"
            else ("msmarco" if name == "msmarco_dev" else name)
        )
        return [root / sub]
    if info.loader == "trec":
        return [root / name / "qrels.txt", root / "msmarco_passage" / "collection.tsv"]
    return [root / "bright" / "examples", root / "bright" / "documents"]


def msmarco_qa_file(data_dir: str | Path, split: str) -> Path:
    """MS MARCO v1.1 QA's ``split`` (train, validation) under ``<data_dir>/msmarco_qa``, jsonl or parquet."""
    root = Path(data_dir) / "msmarco_qa"
    return next(
        (root / f"{split}{s}" for s in (".jsonl", ".parquet") if (root / f"{split}{s}").exists()),
        root / f"{split}.jsonl",
    )


def training_paths(source: str, data_dir: str | Path) -> list[Path]:
    """Files training needs (training pairs, the dev set), for validation before any compute."""
    if source == "msmarco_qa":
        return [msmarco_qa_file(data_dir, "train"), msmarco_qa_file(data_dir, "validation")]
    if source == "msmarco_passage":
        return list(msmarco_passage_files(data_dir).values())
    return [Path(data_dir) / "train", Path(data_dir) / "dev"]


def load_training_pairs(source: str, data_dir: str | Path, limit: int = 0) -> list[tuple[str, str]]:
    if source == "pydoc":
        return beir.beir_training_pairs(Path(data_dir) / "train", "train", limit)
    if source == "msmarco_qa":
        return beir.load_msmarco_qa_pairs(msmarco_qa_file(data_dir, "train"), limit)
    if source == "msmarco_passage":
        return load_msmarco_passage_pairs(data_dir, limit)
    raise ValueError(f"unknown training source {source!r}; valid sources are: {', '.join(TRAIN_SOURCES)}")


def load_dev_set(source: str, data_dir: str | Path, corpus_size: int = 0) -> beir.RetrievalSet:
    """The validation set for checkpoint selection: pydoc's dev split; (paper, ``msmarco_qa``) MS MARCO
    v1.1 QA's own validation split; (``msmarco_passage``) the dev share of the judged training queries,
    never trained on (``msmarco_passage_split``). Never MS MARCO dev, which is a test set;
    ``without_test_queries`` then drops any query that a test set also asks. ``corpus_size``: only
    ``msmarco_passage`` uses it, to read no more of the collection than ``dev_corpus`` keeps (0: all)."""
    if source == "pydoc":
        return beir.load_beir(Path(data_dir) / "dev", "dev", "dev")
    if source == "msmarco_passage":
        return load_msmarco_passage_dev(data_dir, corpus_size)
    return beir.load_msmarco_qa_set(msmarco_qa_file(data_dir, "validation"), "msmarco_qa_validation")


def without_test_queries(dev: beir.RetrievalSet, tests: dict[str, beir.RetrievalSet]) -> beir.RetrievalSet:
    """The dev set without the queries whose text (case and spacing aside) a test set asks: checkpoint
    selection must not see a test query. How many were dropped goes into ``notes``."""

    def key(text: str) -> str:
        return " ".join(text.casefold().split())

    asked = {key(t) for test in tests.values() for t in test.queries.values()}
    keep = [q for q in dev.query_ids() if key(dev.queries[q]) not in asked]
    out = beir.RetrievalSet(
        dev.name,
        dev.corpus,
        {q: dev.queries[q] for q in keep},
        {q: dev.qrels[q] for q in keep},
        {q: dev.excluded[q] for q in keep if q in dev.excluded},
        {**dev.notes, "queries_dropped_as_test_queries": len(dev.queries) - len(keep)},
    )
    if not keep:
        raise ValueError(
            f"every query of the dev set {dev.name!r} is also a test query: nothing to select on"
        )
    return out


def only_queries(data: beir.RetrievalSet, query_ids: list[str]) -> beir.RetrievalSet:
    """The set restricted to these queries (in this order), its corpus unchanged."""
    missing = [q for q in query_ids if q not in data.queries]
    if missing:
        raise ValueError(f"{data.name}: no query {missing[0]!r} (the dev set differs between processes?)")
    return beir.RetrievalSet(
        data.name,
        data.corpus,
        {q: data.queries[q] for q in query_ids},
        {q: data.qrels[q] for q in query_ids},
        {q: data.excluded[q] for q in query_ids if q in data.excluded},
        dict(data.notes),
    )


def load_heldout_pairs(source: str, data_dir: str | Path, n_pairs: int) -> list[tuple[str, str]]:
    """Pairs for the Fisher predictor that no run trains on: pydoc's held-out split, (paper,
    ``msmarco_qa``) MS MARCO v1.1 QA validation pairs, or (``msmarco_passage``) the held-out share of
    the judged training queries (``msmarco_passage_split``)."""
    if source == "pydoc":
        return beir.beir_training_pairs(Path(data_dir) / "heldout", "test", n_pairs)
    if source == "msmarco_passage":
        return load_msmarco_passage_heldout(data_dir, n_pairs)
    return beir.load_msmarco_qa_pairs(msmarco_qa_file(data_dir, "validation"), n_pairs)


# ----------------------------------------------------------------------------------------------
# MS MARCO passage ranking's judged training pairs (data_source msmarco_passage: the E5-500K arm)

PASSAGE_DEV_QUERIES = 2500  # held out of training for checkpoint selection (dev_queries takes the first)
PASSAGE_HELDOUT_QUERIES = 2500  # held out of training for the Fisher predictor (fisher_pairs takes the first)


def msmarco_passage_files(data_dir: str | Path) -> dict[str, Path]:
    """The three files of MS MARCO passage ranking's training data, in ``embsym data fetch``'s layout."""
    root = Path(data_dir) / "msmarco_passage"
    return {
        "collection": root / "collection.tsv",
        "queries": root / "queries.train.tsv",
        "qrels": root / "qrels.train.tsv",
    }


def read_passage_qrels(path: str | Path) -> dict[str, list[str]]:
    """``qrels.train.tsv`` (``qid 0 pid rel`` per line): query id -> its judged relevant passage ids
    (rel > 0), in file order. A malformed line is one error naming the file and line."""
    out: dict[str, list[str]] = {}
    with open(beir._need(Path(path)), encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                if len(parts) != 4:
                    raise ValueError
                rel = int(parts[3])
            except ValueError:
                raise ValueError(
                    f"{path}:{line_no}: expected 'qid 0 pid rel', got {line.strip()!r}"
                ) from None
            if rel > 0 and parts[2] not in out.setdefault(parts[0], []):
                out[parts[0]].append(parts[2])
    return {q: pids for q, pids in out.items() if pids}


def read_tsv_subset(path: str | Path, ids: set[str] | None = None, first: int = 0) -> dict[str, str]:
    """``id \\t text`` lines (``queries.train.tsv``, ``collection.tsv``), in one pass: the lines whose id
    is in ``ids``, plus the first ``first`` other lines (distractors); stops reading as soon as it holds
    them all, so the 8.8M-passage collection costs the memory of what is kept. ``ids`` None: every line."""
    wanted = None if ids is None else set(ids)
    out: dict[str, str] = {}
    extra = 0
    with open(beir._need(Path(path)), encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line:
                continue
            parts = line.split("\t", 1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{line_no}: expected 'id<TAB>text', got {line[:80]!r}")
            key, text = parts
            if wanted is None or key in wanted:
                out[key] = text
                if wanted is not None:
                    wanted.discard(key)
            elif extra < first:
                out[key] = text
                extra += 1
            if wanted is not None and not wanted and extra >= first:
                break
    return out


@dataclass(frozen=True)
class PassageSplit:
    """The judged training queries of MS MARCO passage ranking, by id: ``train`` (file order), ``dev``
    and ``heldout`` (hash order)."""

    train: list[str]
    dev: list[str]
    heldout: list[str]


def msmarco_passage_split(query_ids: list[str]) -> PassageSplit:
    """Deterministic and independent of file order: the queries ordered by sha1 of their id; the first
    ``PASSAGE_DEV_QUERIES`` are the dev set, the next ``PASSAGE_HELDOUT_QUERIES`` the Fisher predictor's,
    the rest train (a tenth each at most, for small files)."""
    if len(query_ids) < 3:
        raise ValueError(
            f"msmarco_passage: {len(query_ids)} judged training queries; at least 3 are needed "
            "(train, dev, held-out)"
        )
    ordered = sorted(query_ids, key=lambda q: (_hash(f"msmarco_passage:{q}"), q))
    n_dev = max(1, min(PASSAGE_DEV_QUERIES, len(ordered) // 10))
    n_held = max(1, min(PASSAGE_HELDOUT_QUERIES, len(ordered) // 10))
    dev, heldout = ordered[:n_dev], ordered[n_dev : n_dev + n_held]
    kept = set(dev) | set(heldout)
    return PassageSplit([q for q in query_ids if q not in kept], dev, heldout)


def _text_key(text: str) -> str:
    return " ".join(text.casefold().split())


def _passage_queries(data_dir: str | Path) -> tuple[dict[str, list[str]], PassageSplit, dict[str, str]]:
    """The judged training queries, their split and texts: read once per run (training pairs, dev set and
    held-out pairs all need them), again only when either file changed."""
    files = msmarco_passage_files(data_dir)
    stamp = tuple((str(files[k].resolve()), *_file_stamp(files[k])) for k in ("qrels", "queries"))
    return _read_passage_queries(stamp)


def _file_stamp(path: Path) -> tuple[int, int]:
    st = beir._need(path).stat()
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=2)
def _read_passage_queries(stamp: tuple) -> tuple[dict[str, list[str]], PassageSplit, dict[str, str]]:
    (qrels_path, *_), (queries_path, *_) = stamp
    qrels = read_passage_qrels(qrels_path)
    split = msmarco_passage_split(list(qrels))
    queries = read_tsv_subset(queries_path, set(qrels))
    return qrels, split, queries


def load_msmarco_passage_pairs(data_dir: str | Path, limit: int = 0) -> list[tuple[str, str]]:
    """(query, judged passage) training pairs, one per training query (its first judged passage), in
    qrels order; never a dev or held-out query, by id or by text. Reads only the passages it returns."""
    qrels, split, queries = _passage_queries(data_dir)
    kept = {_text_key(queries[q]) for q in split.dev + split.heldout if q in queries}
    chosen = []
    for q in split.train:
        if q in queries and _text_key(queries[q]) not in kept:
            chosen.append((q, qrels[q][0]))
            if limit and len(chosen) >= limit:
                break
    passages = read_tsv_subset(msmarco_passage_files(data_dir)["collection"], {p for _, p in chosen})
    return [(queries[q], passages[p]) for q, p in chosen if p in passages]


def load_msmarco_passage_dev(data_dir: str | Path, corpus_size: int = 0) -> beir.RetrievalSet:
    """The dev queries of ``msmarco_passage_split`` (hash order) with all their judged passages, over a
    sub-corpus: those passages plus the collection's first ``corpus_size`` other passages (0: the whole
    collection), in collection order."""
    qrels, split, queries = _passage_queries(data_dir)
    dev = [q for q in split.dev if q in queries]
    relevant = {p for q in dev for p in qrels[q]}
    collection = msmarco_passage_files(data_dir)["collection"]
    texts = read_tsv_subset(collection, relevant, corpus_size) if corpus_size else read_tsv_subset(collection)
    corpus = {pid: {"title": "", "text": text} for pid, text in texts.items()}
    return beir.RetrievalSet(
        "msmarco_passage_dev",
        corpus,
        {q: queries[q] for q in dev},
        {q: {p: 1 for p in qrels[q] if p in corpus} for q in dev},
    )


def load_msmarco_passage_heldout(data_dir: str | Path, n_pairs: int) -> list[tuple[str, str]]:
    """The Fisher predictor's pairs: the held-out queries of ``msmarco_passage_split`` (hash order), one
    pair each (its first judged passage), the first ``n_pairs``; none is a training query."""
    if not n_pairs:
        return []
    qrels, split, queries = _passage_queries(data_dir)
    chosen = [(q, qrels[q][0]) for q in split.heldout if q in queries][:n_pairs]
    passages = read_tsv_subset(msmarco_passage_files(data_dir)["collection"], {p for _, p in chosen})
    return [(queries[q], passages[p]) for q, p in chosen if p in passages]


def load_rag_set(name: str, data_dir: str | Path):
    if name not in RAG_SETS:
        raise ValueError(f"unknown RAG set {name!r}; valid sets are: {', '.join(RAG_SETS)}")
    folder = Path(data_dir) / (name if name.startswith("pydoc") else f"rag/{name}")
    return beir.load_qa(folder)
