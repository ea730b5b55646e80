"""The paper profile's retrieval setup beyond the main table (issue #15): the E5-500K training source
(MS MARCO passage ranking's judged training pairs, ``data_source: msmarco_passage``), the BERT-base
trained from scratch, and the PT column of every encoder. Every file is a small fixture written here in
the real formats; nothing is downloaded, nothing is trained."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from embsym_lib import fetch
from embsym_lib.adapters.sentence_transformers import with_overrides
from embsym_lib.data import retrieval as rdata
from embsym_lib.data.sources import MSMARCO, SOURCES
from embsym_lib.families.retrieval import pipeline
from embsym_lib.params import expand
from embsym_lib.schema import ParamError

N_QUERIES = 40  # judged training queries: 4 dev, 4 held-out (a tenth each), 32 train
PAPER_ENCODERS = {"contriever", "retromae", "e5", "bert"}
ALL_VARIANTS = {"cosine", "dot", "qnorm", "dnorm", "learn"}


def key(text: str) -> str:
    return " ".join(text.casefold().split())


def write_passage_data(root: Path, garbage_tail: bool = False) -> dict:
    """MS MARCO passage ranking's training files under ``root/msmarco_passage`` in their real formats:
    ``collection.tsv`` (pid TAB passage), ``queries.train.tsv`` (qid TAB query), ``qrels.train.tsv``
    (qid 0 pid 1, TAB separated). 40 judged queries (one with two judged passages, one with a judgment of
    0 beside its positive), unjudged queries, unjudged passages; a training query repeats a held-out
    query's text. ``garbage_tail``: a malformed line, then more passages, after every judged passage (a
    reader that goes past what it needs fails on it)."""
    qids = [str(1000 + 7 * i) for i in range(N_QUERIES)]
    split = rdata.msmarco_passage_split(qids)
    queries = {q: f"question number {q} about topic {i}" for i, q in enumerate(qids)}
    twin = split.train[5]  # the same text as a held-out query (case and spacing aside)
    queries[twin] = "  " + queries[split.heldout[0]].upper() + " "
    unjudged = {"9001": "an unjudged query", "9002": "another unjudged query"}
    positives = {q: [str(10 + 2 * i)] for i, q in enumerate(qids)}
    positives[qids[3]].append("9")  # a second judged passage
    passages = {str(p): f"passage {p} text" for p in range(10 + 2 * N_QUERIES)}
    folder = root / "msmarco_passage"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{p}\t{t}" for p, t in passages.items()]
    tail = {"5000": "after the garbage", "5001": "more after the garbage"}
    if garbage_tail:
        lines += ["a line without any tab", *(f"{p}\t{t}" for p, t in tail.items())]
    (folder / "collection.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "queries.train.tsv").write_text(
        "".join(f"{q}\t{t}\n" for q, t in {**unjudged, **queries}.items()), encoding="utf-8"
    )
    qrels = [f"{q}\t0\t{p}\t1" for q in qids for p in positives[q]]
    qrels.insert(8, f"{qids[6]}\t0\t11\t0")  # judged not relevant: never a pair
    (folder / "qrels.train.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return {
        "qids": qids,
        "split": split,
        "queries": queries,
        "positives": positives,
        "passages": passages,
        "twin": twin,
    }


def write_trec_dl19(root: Path, texts: dict[str, str], pids: list[str]) -> None:
    folder = root / "trec_dl19"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "queries.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in texts.items()))
    (folder / "qrels.txt").write_text("".join(f"{q} Q0 {p} 2\n" for q in texts for p in pids))


def write_msmarco_qa(root: Path) -> None:
    folder = root / "msmarco_qa"
    folder.mkdir(parents=True, exist_ok=True)
    row = {"query": "what is a fever", "passages": {"is_selected": [1], "passage_text": ["A fever is heat."]}}
    for split in ("train", "validation"):
        (folder / f"{split}.jsonl").write_text(json.dumps(row) + "\n")


# ------------------------------------------------------------------------------------------ the source


def test_the_split_is_by_hash_of_the_id_disjoint_and_independent_of_file_order():
    qids = [str(1000 + 7 * i) for i in range(N_QUERIES)]
    split = rdata.msmarco_passage_split(qids)
    assert (len(split.dev), len(split.heldout), len(split.train)) == (4, 4, 32)
    assert not set(split.dev) & set(split.heldout)
    assert not (set(split.dev) | set(split.heldout)) & set(split.train)
    assert set(split.dev) | set(split.heldout) | set(split.train) == set(qids)
    assert split.train == [q for q in qids if q in set(split.train)]  # training keeps the file's order
    again = rdata.msmarco_passage_split(list(reversed(qids)))
    assert (again.dev, again.heldout) == (split.dev, split.heldout)
    big = rdata.msmarco_passage_split([str(i) for i in range(60_000)])  # the real sizes are capped
    assert (len(big.dev), len(big.heldout)) == (rdata.PASSAGE_DEV_QUERIES, rdata.PASSAGE_HELDOUT_QUERIES)
    with pytest.raises(ValueError, match="at least 3"):
        rdata.msmarco_passage_split(["1", "2"])


def test_training_pairs_are_judged_query_passage_pairs_of_training_queries_only(tmp_path):
    fx = write_passage_data(tmp_path)
    split, queries, positives, passages = fx["split"], fx["queries"], fx["positives"], fx["passages"]
    pairs = rdata.load_training_pairs("msmarco_passage", tmp_path)
    expected = [(queries[q], passages[positives[q][0]]) for q in split.train if q != fx["twin"]]
    assert pairs == expected  # one pair per query: its first judged passage, in qrels order
    assert len(pairs) == len(split.train) - 1
    texts = {key(q) for q, _ in pairs}
    assert not texts & {"an unjudged query", "another unjudged query"}
    # no dev or held-out query, by id or by text (the twin repeats a held-out query's text)
    assert not texts & {key(queries[q]) for q in split.dev + split.heldout}
    assert rdata.load_training_pairs("msmarco_passage", tmp_path, limit=3) == expected[:3]


def test_the_collection_is_read_once_and_only_as_far_as_the_needed_passages(tmp_path):
    fx = write_passage_data(tmp_path, garbage_tail=True)
    collection = rdata.msmarco_passage_files(tmp_path)["collection"]
    with pytest.raises(ValueError, match=r"collection.tsv:\d+: expected 'id<TAB>text'"):
        rdata.read_tsv_subset(collection)  # a full pass meets the malformed line
    # the loaders stop once they hold every passage they need: the malformed tail is never read
    pairs = rdata.load_training_pairs("msmarco_passage", tmp_path)
    assert len(pairs) == len(fx["split"].train) - 1
    assert rdata.read_tsv_subset(collection, {"12", "30"}) == {
        "12": "passage 12 text",
        "30": "passage 30 text",
    }
    assert list(rdata.read_tsv_subset(collection, {"30"}, first=2)) == ["0", "1", "30"]
    with pytest.raises(ValueError, match="expected 'id<TAB>text'"):
        rdata.read_tsv_subset(collection, {"5001"})  # a passage past the malformed line: read to it
    assert rdata.read_passage_qrels(rdata.msmarco_passage_files(tmp_path)["qrels"])[fx["qids"][6]] == ["22"]


def test_the_judged_queries_are_read_once_per_run_and_again_when_a_file_changes(tmp_path, monkeypatch):
    write_passage_data(tmp_path)
    reads = Counter()
    read_qrels = rdata.read_passage_qrels

    def counting(path):
        reads[Path(path).name] += 1
        return read_qrels(path)

    monkeypatch.setattr(rdata, "read_passage_qrels", counting)
    rdata._read_passage_queries.cache_clear()
    pairs = rdata.load_training_pairs("msmarco_passage", tmp_path)
    rdata.load_dev_set("msmarco_passage", tmp_path, 10)
    rdata.load_heldout_pairs("msmarco_passage", tmp_path, 2)
    assert reads == {"qrels.train.tsv": 1}  # training pairs, dev set and held-out pairs share one read
    queries = rdata.msmarco_passage_files(tmp_path)["queries"]
    queries.write_text(queries.read_text(encoding="utf-8").replace("about", "on"), encoding="utf-8")
    changed = rdata.load_training_pairs("msmarco_passage", tmp_path)
    assert reads == {"qrels.train.tsv": 2} and changed != pairs and "on topic" in changed[0][0]


def test_malformed_qrels_name_the_file_and_line(tmp_path):
    write_passage_data(tmp_path)
    qrels = rdata.msmarco_passage_files(tmp_path)["qrels"]
    qrels.write_text(qrels.read_text() + "1 0 2\n")
    with pytest.raises(ValueError, match=r"qrels.train.tsv:\d+: expected 'qid 0 pid rel'"):
        rdata.load_training_pairs("msmarco_passage", tmp_path)


def test_dev_set_shares_no_query_with_any_test_set_and_heldout_pairs_none_with_training(tmp_path):
    fx = write_passage_data(tmp_path, garbage_tail=True)
    split, queries, positives, passages = fx["split"], fx["queries"], fx["positives"], fx["passages"]
    # a TREC-DL 19 query that is (case and spacing aside) the first dev query: it must leave the dev set
    write_trec_dl19(
        tmp_path, {"t1": queries[split.dev[0]].title() + "  ", "t2": "a test query"}, ["12", "14"]
    )
    overrides = {
        "data_dir": str(tmp_path),
        "data_source": "msmarco_passage",
        "encoder": "e5",
        "test_sets": ["trec_dl19"],
        "dev_queries": 0,
        "dev_corpus": 20,
        "fisher_pairs": 3,
        "fisher_variants": ["qnorm"],
        "rag_sets": [],
    }
    points = expand("retrieval", "paper", variants=["qnorm"], seeds=[0], overrides=overrides)
    params = next(p.params for p in points if p.params["train"])
    data = pipeline.prepare_data(params)
    dev, train, heldout = data["dev"], data["train"], data["heldout"]
    asked = {key(t) for test in data["tests"].values() for t in test.queries.values()}
    assert asked and not asked & {key(t) for t in dev.queries.values()}
    assert dev.notes["queries_dropped_as_test_queries"] == 1
    assert dev.query_ids() == split.dev[1:]  # the others, in hash order, none of them trained on
    assert all(dev.qrels[q] == dict.fromkeys(positives[q], 1) for q in dev.query_ids())
    assert len(dev.corpus) == 20 and all(p in dev.corpus for q in dev.query_ids() for p in positives[q])
    assert not {key(t) for t in dev.queries.values()} & {key(q) for q, _ in train}
    # the Fisher predictor's pairs: the held-out queries (hash order), never a training pair or query
    assert heldout == [(queries[q], passages[positives[q][0]]) for q in split.heldout[:3]]
    assert not {key(q) for q, _ in heldout} & {key(q) for q, _ in train}
    assert not set(heldout) & set(train)
    # a distributed worker rebuilds the notebook's dev set from its query ids
    worker = pipeline.prepare_training_data(params, dev_query_ids=dev.query_ids())["dev"]
    assert (worker.queries, worker.qrels, worker.corpus) == (dev.queries, dev.qrels, dev.corpus)
    assert rdata.load_heldout_pairs("msmarco_passage", tmp_path, 0) == []


# ------------------------------------------------------------------------------------------ the profile


def test_the_paper_grid_has_e5_500k_bert_base_scratch_and_pt_for_every_encoder():
    points = expand("retrieval", "paper", check_data=False)
    trained = [p.params for p in points if p.params["train"]]
    e5_500k = [p for p in trained if p["data_source"] == "msmarco_passage"]
    assert {p["encoder"] for p in e5_500k} == {"e5"}
    assert {p["seed"] for p in e5_500k} == {0}
    assert {p["variant"] for p in e5_500k} == {"cosine", "dot", "qnorm", "dnorm"}  # Table 16's columns
    e5_80k = [p for p in trained if p["encoder"] == "e5" and p["data_source"] == "msmarco_qa"]
    assert len(e5_80k) == 15, "the E5-80K arm stays in the main block"
    main = Counter(p["encoder"] for p in trained if p["data_source"] == "msmarco_qa")
    assert main == {e: 15 for e in (*PAPER_ENCODERS, "scratch")}

    scratch = [with_overrides(p) for p in trained if p["encoder"] == "scratch"]
    assert {p["seed"] for p in scratch} == {0, 42, 1337} and {p["variant"] for p in scratch} == ALL_VARIANTS
    for p in scratch:  # BERT-base, trained like the fine-tuned arms on the ~82K MS MARCO v1.1 QA pairs
        sizes = (
            p["scratch_hidden_size"],
            p["scratch_layers"],
            p["scratch_heads"],
            p["scratch_intermediate_size"],
        )
        assert sizes == (768, 12, 12, 3072)
        assert (p["data_source"], p["lr"], p["epochs"], p["n_train_pairs"]) == ("msmarco_qa", 5e-6, 100.0, 0)

    pt = [p.params for p in points if not p.params["train"]]
    assert {p["encoder"] for p in pt} == PAPER_ENCODERS  # scratch has no pretrained checkpoint
    assert {p["seed"] for p in pt} == {0}  # a fixed model: one run per variant
    assert Counter(p["encoder"] for p in pt) == dict.fromkeys(PAPER_ENCODERS, len(ALL_VARIANTS))
    assert all({p["variant"] for p in pt if p["encoder"] == e} == ALL_VARIANTS for e in PAPER_ENCODERS)
    # the E5-500K runs are told apart from the E5-80K ones by their run id (data_source is a grid axis)
    ids = {p.run_id for p in points if p.params["data_source"] == "msmarco_passage"}
    assert ids and all("data_source=msmarco_passage" in i for i in ids)


@pytest.mark.parametrize("missing", ["queries.train.tsv", "qrels.train.tsv", "collection.tsv"])
def test_a_missing_passage_training_file_is_named_before_any_compute(tmp_path, missing):
    write_passage_data(tmp_path)
    write_msmarco_qa(tmp_path)
    write_trec_dl19(tmp_path, {"t1": "a test query"}, ["12"])
    overrides = {"data_dir": str(tmp_path), "test_sets": ["trec_dl19"], "rag_sets": []}
    assert expand("retrieval", "paper", variants=["qnorm"], seeds=[0], overrides=overrides)
    (tmp_path / "msmarco_passage" / missing).unlink()
    if missing == "collection.tsv":  # TREC-DL needs it too: the test set is refused first
        pattern = "missing .*msmarco_passage/collection.tsv"
    else:
        pattern = rf"training data \(msmarco_passage: .*\): missing .*msmarco_passage/{missing}"
    with pytest.raises(ParamError, match=pattern):
        expand("retrieval", "paper", variants=["qnorm"], seeds=[0], overrides=overrides)
    # the blocks that train on MS MARCO v1.1 QA alone do not need the passage training files
    if missing != "collection.tsv":
        assert expand(
            "retrieval", "paper", variants=["qnorm"], seeds=[0], overrides={**overrides, "encoder": "bert"}
        )


# ------------------------------------------------------------------------------------------ fetching


def test_the_fetch_registry_has_the_passage_training_files(tmp_path):
    sources = fetch.resolve("retrieval", "paper")
    names = [s.name for s in sources]
    assert "msmarco_passage_train" in names
    assert names.index("msmarco_passage") < names.index("msmarco_passage_train")  # the collection first
    train = SOURCES["retrieval", "msmarco_passage_train"]
    assert train.needs == ("msmarco_passage",)
    assert [r.url for r in train.remotes] == [f"{MSMARCO}/queries.tar.gz", f"{MSMARCO}/qrels.train.tsv"]
    assert MSMARCO == "https://msmarco.z22.web.core.windows.net/msmarcoranking"
    assert all(r.md5 is None for r in train.remotes)  # MS MARCO publishes no checksum: none is guessed
    landed = [tmp_path / p for s in (SOURCES["retrieval", "msmarco_passage"], train) for p in s.paths]
    for path in rdata.training_paths("msmarco_passage", tmp_path):
        assert any(path == p or p in path.parents for p in landed), path
    assert [s.name for s in fetch.resolve("retrieval", only=["msmarco_passage_train"])] == [
        "msmarco_passage",
        "msmarco_passage_train",
    ]


def test_fetching_lands_the_files_where_the_loader_reads_them(tmp_path, monkeypatch):
    """queries.tar.gz (queries.{train,dev,eval}.tsv at its top) and qrels.train.tsv, converted by the
    fetcher (downloads replaced by local files) into the layout the loader reads."""
    fx = write_passage_data(tmp_path / "src")
    src = tmp_path / "src" / "msmarco_passage"
    archive = tmp_path / "queries.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("queries.train.tsv", "queries.dev.tsv", "queries.eval.tsv"):
            data = (src / "queries.train.tsv").read_bytes() if name == "queries.train.tsv" else b"1\tq\n"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    collection = tmp_path / "collection.tar.gz"
    with tarfile.open(collection, "w:gz") as tar:
        tar.add(src / "collection.tsv", arcname="collection.tsv")
    local = {
        f"{MSMARCO}/queries.tar.gz": archive,
        f"{MSMARCO}/qrels.train.tsv": src / "qrels.train.tsv",
        f"{MSMARCO}/collection.tar.gz": collection,
    }

    def download(remote, *args, **kwargs):  # a fresh copy: the fetcher deletes a download once converted
        copy = tmp_path / "downloads" / Path(remote.url).name
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(local[remote.url], copy)
        return copy

    monkeypatch.setattr(fetch, "_download", download)
    root = tmp_path / "root"
    for source in fetch.resolve("retrieval", only=["msmarco_passage_train"]):
        assert fetch.fetch_one(source, root, progress=False, say=lambda *a: None)
    data_dir = root / "retrieval"
    assert all(p.is_file() for p in rdata.training_paths("msmarco_passage", data_dir))
    assert not (data_dir / "msmarco_passage" / "queries.dev.tsv").exists()  # only what the source names
    assert rdata.load_training_pairs("msmarco_passage", data_dir) == rdata.load_training_pairs(
        "msmarco_passage", tmp_path / "src"
    )
    assert len(rdata.load_training_pairs("msmarco_passage", data_dir)) == len(fx["split"].train) - 1
