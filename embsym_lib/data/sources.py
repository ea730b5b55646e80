"""Where the paper profile's data sets come from: every name a ``params/paper/<family>.yaml`` uses, its
canonical download URLs (with the published checksum where there is one), and the layout it becomes
under the family's data folder, the one the project's loaders read (``data/beir.py``, ``data/sts.py``,
``data/clip.py``, ``data/fewshot.py``, the kg and recsys specs). ``embsym_lib/fetch.py`` (runs layer: it reads the expanded grid) downloads and converts.

Checksums are the ones the source publishes: BEIR's md5 table (its README / Hugging Face card) and
torchvision's md5 of the Omniglot zips. Every other source publishes none (the Hugging Face files are
read from the ``main`` revision, which may move), so its ``md5`` is ``None``: never a guessed value.
"""

from __future__ import annotations

from dataclasses import dataclass

from .retrieval import BRIGHT12, MULTIHOP4

# How each family's parameters point at its folder under the data root (``embsym data fetch`` prints them).
FAMILY_SETTINGS: dict[str, dict[str, str]] = {
    "retrieval": {"data_dir": ""},
    "sts": {"data_dir": "stsb", "nli_file": "allnli/AllNLI.tsv.gz"},
    "clip": {"data_dir": "coco"},
    "kg": {"cache_root": ""},
    "fewshot": {"data_dir": ""},
    "recsys": {"data_dir": ""},
}
# The offline profile downloads nothing: what each family uses instead.
OFFLINE: dict[str, str] = {
    "synthetic": "generated (known ground truth)",
    "retrieval": "generated (pydoc: docstrings of installed packages)",
    "sts": "generated (graded templated pairs)",
    "clip": "generated (rendered shape scenes)",
    "kg": "packaged (PyKEEN's Nations, Kinships, UMLS)",
    "fewshot": "generated (glyphs from matplotlib's fonts)",
    "recsys": "packaged (RecBole's ml-100k)",
}


@dataclass(frozen=True)
class Remote:
    """One file to download. ``fmt``: file (kept as is), gz (decompressed), zip or tar.gz (extracted);
    ``into``: where it goes, relative to the family's folder; ``strip``: the archive's top folder, dropped."""

    url: str
    md5: str | None = None
    fmt: str = "file"
    into: str = ""
    strip: str = ""


@dataclass(frozen=True)
class Source:
    """A data set: its downloads, the paths (under the family's folder) that hold it once converted, the
    data sets it needs beside it, or the library that fetches it (``library``), or why it is manual."""

    family: str
    name: str
    paths: tuple[str, ...]
    remotes: tuple[Remote, ...] = ()
    needs: tuple[str, ...] = ()
    library: str = ""
    manual: str = ""  # no canonical download in the loader's format: what to do instead

    @property
    def origin(self) -> str:
        if self.library:
            return f"fetched by {self.library}"
        if self.manual:
            return "manual"
        hosts = dict.fromkeys(r.url.split("/")[2] for r in self.remotes)
        return ", ".join(hosts)


BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{}.zip"
# BEIR's published md5 of each zip (msmarco's folder is the loader's msmarco_dev).
BEIR_MD5 = {
    "msmarco": "444067daf65d982533ea17ebd59501e4",
    "trec-covid": "ce62140cb23feb9becf6270d0d1fe6d1",
    "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
    "nq": "d4d3d2e48787a744b6f6e691ff534307",
    "hotpotqa": "f412724f78b0d91183a0e86805e16114",
    "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9",
    "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
    "webis-touche2020": "46f650ba5a527fc69e0a6521c5a23563",
    "cqadupstack": "4e41456d7df8ee7760a7f866133bda78",
    "quora": "18fb154900ba42a600f84b839c173167",
    "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c",
    "scidocs": "38121350fc3a4d2f48850f6aff52e4a9",
    "fever": "5a818580227bfb4b35bb6fa46d9b6c03",
    "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d",
    "scifact": "5f7d1de60b170fc8027bb7898e2efca1",
}
MSMARCO = "https://msmarco.z22.web.core.windows.net/msmarcoranking"
HF = "https://huggingface.co/datasets"
RAG = ("nq", "hotpotqa", "triviaqa")
RECBOLE = "https://recbole.s3-accelerate.amazonaws.com/ProcessedDatasets"
OMNIGLOT = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
# torchvision.datasets.Omniglot.zips_md5
OMNIGLOT_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
COCO = "http://images.cocodataset.org"


def _beir(name: str, folder: str | None = None) -> Source:
    folder = folder or name
    remote = Remote(BEIR_URL.format(folder), BEIR_MD5[folder], "zip", folder, strip=folder)
    return Source("retrieval", name, (folder,), (remote,))


def _trec(name: str, year: str) -> Source:
    return Source(
        "retrieval",
        name,
        (name,),
        (
            Remote(f"{MSMARCO}/msmarco-test{year}-queries.tsv.gz", None, "gz", f"{name}/queries.tsv"),
            Remote(
                f"https://trec.nist.gov/data/deep/{year}qrels-pass.txt", None, "file", f"{name}/qrels.txt"
            ),
        ),
        needs=("msmarco_passage",),
    )


def _bright(task: str) -> Source:
    files = {part: f"bright/{part}/{task}.parquet" for part in ("examples", "documents")}
    remotes = tuple(
        Remote(f"{HF}/xlangai/BRIGHT/resolve/main/{part}/{task}-00000-of-00001.parquet", None, "file", path)
        for part, path in files.items()
    )
    return Source("retrieval", task, tuple(files.values()), remotes)


def _registry() -> dict[tuple[str, str], Source]:
    out = [
        _beir("msmarco_dev", "msmarco"),
        *(_beir(n) for n in BEIR_MD5 if n != "msmarco"),
        Source(
            "retrieval",
            "msmarco_passage",
            ("msmarco_passage",),
            (Remote(f"{MSMARCO}/collection.tar.gz", None, "tar.gz", "msmarco_passage"),),
        ),
        # MS MARCO passage ranking's judged training queries (data_source: msmarco_passage, the E5-500K
        # arm): queries.tar.gz holds queries.{train,dev,eval}.tsv (only train is kept); qrels.train.tsv as is
        Source(
            "retrieval",
            "msmarco_passage_train",
            ("msmarco_passage/queries.train.tsv", "msmarco_passage/qrels.train.tsv"),
            (
                Remote(f"{MSMARCO}/queries.tar.gz", None, "tar.gz", "msmarco_passage"),
                Remote(f"{MSMARCO}/qrels.train.tsv", None, "file", "msmarco_passage/qrels.train.tsv"),
            ),
            needs=("msmarco_passage",),
        ),
        _trec("trec_dl19", "2019"),
        _trec("trec_dl20", "2020"),
        *(_bright(t) for t in BRIGHT12),
        Source(
            "retrieval",
            "msmarco_qa",
            ("msmarco_qa/train.parquet", "msmarco_qa/validation.parquet"),
            tuple(
                Remote(
                    f"{HF}/microsoft/ms_marco/resolve/main/v1.1/{s}-00000-of-00001.parquet", None, "file", p
                )
                for s, p in (
                    ("train", "msmarco_qa/train.parquet"),
                    ("validation", "msmarco_qa/validation.parquet"),
                )
            ),
        ),
        *(
            Source(
                "retrieval",
                name,
                (f"multihop/{name}",),
                manual="no published BEIR version: convert the set's questions, paragraphs and supporting "
                f"facts into a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) at multihop/{name}",
            )
            for name in MULTIHOP4
        ),
        *(
            Source(
                "retrieval",
                f"rag_{name}",
                (f"rag/{name}",),
                manual="no canonical download in this layout: write qa.jsonl ({_id, question, answers}) and "
                f"the passages' corpus.jsonl (BEIR) under rag/{name}",
            )
            for name in RAG
        ),
        Source(
            "sts",
            "stsb",
            ("stsb",),
            (
                Remote(
                    "http://ixa2.si.ehu.eus/stswiki/images/4/48/Stsbenchmark.tar.gz",
                    None,
                    "tar.gz",
                    "stsb",
                    "stsbenchmark",
                ),
            ),
        ),
        Source(
            "sts",
            "allnli",
            ("allnli/AllNLI.tsv.gz",),
            (Remote("https://sbert.net/datasets/AllNLI.tsv.gz", None, "file", "allnli/AllNLI.tsv.gz"),),
        ),
        Source(
            "clip",
            "coco",
            ("coco/annotations", "coco/train2017", "coco/val2017"),
            (
                Remote(f"{COCO}/annotations/annotations_trainval2017.zip", None, "zip", "coco"),
                Remote(f"{COCO}/zips/train2017.zip", None, "zip", "coco"),
                Remote(f"{COCO}/zips/val2017.zip", None, "zip", "coco"),
            ),
        ),
        *(Source("kg", name, (name,), library="pykeen") for name in ("fb15k237", "wn18rr")),
        Source(
            "fewshot",
            "omniglot",
            ("omniglot-py",),
            tuple(
                Remote(f"{OMNIGLOT}/{p}.zip", md5, "zip", "omniglot-py") for p, md5 in OMNIGLOT_MD5.items()
            ),
        ),
        Source(
            "fewshot",
            "miniimagenet",
            tuple(f"mini-imagenet-cache-{s}.pkl" for s in ("train", "validation", "test")),
            # learn2learn's own zenodo copy (its MiniImagenet(download=True) reads the same files)
            tuple(
                Remote(
                    f"https://zenodo.org/record/7978538/files/mini-imagenet-cache-{s}.pkl", None, "file", p
                )
                for s, p in ((s, f"mini-imagenet-cache-{s}.pkl") for s in ("train", "validation", "test"))
            ),
        ),
        *(
            Source(
                "recsys", name, (name,), (Remote(f"{RECBOLE}/{group}/{name}.zip", None, "zip", name, name),)
            )
            for name, group in (("ml-1m", "MovieLens"), ("Amazon_Beauty", "Amazon_ratings"))
        ),
    ]
    return {(s.family, s.name): s for s in out}


SOURCES: dict[tuple[str, str], Source] = _registry()
# The registry name of each retrieval ``data_source`` (training pairs and dev set) that has one.
TRAINING_DATA: dict[str, str] = {"msmarco_qa": "msmarco_qa", "msmarco_passage": "msmarco_passage_train"}
