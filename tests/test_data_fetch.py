"""``embsym data fetch`` / ``data list`` end to end against a loopback HTTP server: every source's URL is
read from ``http://127.0.0.1:<port>/<host>/<path>`` (the mirror), serving small archives in the real
formats, and each converted layout is read by the project's own loader. Nothing leaves the machine."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import pickle
import socket
import sys
import tarfile
import threading
import time
import types
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import yaml

from embsym_lib import cli, fetch
from embsym_lib.data import retrieval, sts
from embsym_lib.data.clip import load_coco_captions
from embsym_lib.data.sources import SOURCES, TRAINING_DATA

PARAMS = Path(__file__).resolve().parent.parent / "params"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A static file server on 127.0.0.1; ``serve(url, bytes)`` publishes a file under its mirror path."""
    www = tmp_path_factory.mktemp("www")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    def serve(url: str, data: bytes) -> None:
        path = www / url.split("://", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    yield types.SimpleNamespace(mirror=f"http://127.0.0.1:{httpd.server_address[1]}", serve=serve)
    httpd.shutdown()


def _zip(files: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def _targz(files: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            t.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _parquet(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buf)
    return buf.getvalue()


def _publish(server, monkeypatch, family: str, name: str, payloads: list[bytes], real_md5: bool = False):
    """Serve one payload per remote of a source; its md5 becomes the payload's (as a published one would
    be) unless ``real_md5`` keeps the registry's."""
    source = SOURCES[family, name]
    remotes = []
    for remote, data in zip(source.remotes, payloads, strict=True):
        server.serve(remote.url, data)
        md5 = remote.md5 if real_md5 else hashlib.md5(data).hexdigest()
        remotes.append(dataclasses.replace(remote, md5=md5))
    monkeypatch.setitem(SOURCES, (family, name), dataclasses.replace(source, remotes=tuple(remotes)))


def _fetch(server, root, family, only, **kw):
    return fetch.fetch(
        family, only=only, root=root, mirror=server.mirror, progress=False, say=lambda *a: None, **kw
    )


def _beir_zip(name: str, split: str = "test") -> bytes:
    return _zip(
        {
            f"{name}/corpus.jsonl": _jsonl(
                [{"_id": "d1", "title": "T", "text": "one"}, {"_id": "d2", "title": "", "text": "two"}]
            ),
            f"{name}/queries.jsonl": _jsonl([{"_id": "q1", "text": "which one"}]),
            f"{name}/qrels/{split}.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
        }
    )


# ------------------------------------------------------------------------------------------ registry


@pytest.mark.parametrize("family", ["retrieval", "sts", "clip", "kg", "fewshot", "recsys"])
def test_every_paper_dataset_has_a_source(family):
    import yaml

    doc = yaml.safe_load((PARAMS / "paper" / f"{family}.yaml").read_text())
    names = fetch.profile_datasets(family, "paper")
    params = doc["parameters"]
    if family == "retrieval":
        sources = [params["data_source"]] + [s for b in doc["grid"] for s in b.get("data_source", [])]
        training = [TRAINING_DATA[s] for s in dict.fromkeys(sources)]
        expected = [*params["test_sets"], *training, *(f"rag_{n}" for n in params["rag_sets"])]
    elif family == "sts":
        expected = [params["dataset"], "allnli"]
    elif family == "clip":
        expected = [params["dataset"]]
    else:
        expected = list(doc["grid"]["dataset"])
    assert names == expected  # nothing the paper profile uses is silently dropped
    for name in names:
        s = SOURCES[family, name]
        assert s.remotes or s.library or s.manual, name
        assert all(r.url.startswith(("http://", "https://")) for r in s.remotes)
        assert all(r.md5 is None or len(r.md5) == 32 for r in s.remotes)


def test_registry_layouts_are_the_loaders_paths(tmp_path):
    """Each retrieval source lands where retrieval.dataset_paths / training_paths look."""
    for name in fetch.profile_datasets("retrieval", "paper"):
        s = SOURCES["retrieval", name]
        if name in retrieval.DATASETS:
            wanted = retrieval.dataset_paths(name, tmp_path)
            landed = [tmp_path / p for p in s.paths] + [
                tmp_path / p for dep in s.needs for p in SOURCES["retrieval", dep].paths
            ]
            for w in wanted:
                assert any(w == p or p in w.parents or w in p.parents for p in landed), (name, w)
    msmarco = [tmp_path / p for p in SOURCES["retrieval", "msmarco_qa"].paths]
    assert [p.with_suffix(".jsonl") for p in msmarco] == retrieval.training_paths("msmarco_qa", tmp_path)


def test_offline_profile_is_generated_or_packaged(tmp_path):
    rows = fetch.table(["synthetic", "retrieval", "kg", "recsys"], "offline", tmp_path)
    assert [r["present"] for r in rows] == ["generated", "generated", "packaged", "packaged"]


# ------------------------------------------------------------------------- end to end, per format


def test_beir_zip_fetch_is_read_by_the_loader_and_second_fetch_is_a_noop(server, monkeypatch, tmp_path):
    _publish(server, monkeypatch, "retrieval", "scifact", [_beir_zip("scifact")])
    _publish(server, monkeypatch, "retrieval", "msmarco_dev", [_beir_zip("msmarco", "dev")])
    assert _fetch(server, tmp_path, "retrieval", ["scifact", "msmarco_dev"]) == {
        "scifact": True,
        "msmarco_dev": True,
    }
    data_dir = tmp_path / "retrieval"
    assert retrieval.load_test_set("scifact", data_dir).sizes() == {"queries": 1, "corpus": 2, "qrels": 1}
    assert retrieval.load_test_set("msmarco_dev", data_dir).query_ids() == ["q1"]
    assert not list(tmp_path.rglob(".partial-*")) and not list((tmp_path / ".downloads").iterdir())
    said = []
    assert fetch.fetch(
        "retrieval", only=["scifact"], root=tmp_path, mirror="http://127.0.0.1:9", say=said.append
    ) == {"scifact": False}
    assert any("present" in line and "nothing to do" in line for line in said)


def test_cqadupstack_keeps_one_part_per_forum(server, monkeypatch, tmp_path):
    forums = {f"cqadupstack/{f}/{k}": v for f in ("android", "gis") for k, v in _zipped_beir_files().items()}
    _publish(server, monkeypatch, "retrieval", "cqadupstack", [_zip(forums)])
    _fetch(server, tmp_path, "retrieval", ["cqadupstack"])
    data = retrieval.load_test_set("cqadupstack", tmp_path / "retrieval")
    assert [p.name for p in data.parts] == ["android", "gis"]


def _zipped_beir_files() -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(_beir_zip("x"))) as z:
        return {n.removeprefix("x/"): z.read(n).decode() for n in z.namelist()}


def test_trec_dl_gz_file_and_collection_tar(server, monkeypatch, tmp_path):
    _publish(
        server,
        monkeypatch,
        "retrieval",
        "msmarco_passage",
        [_targz({"collection.tsv": "7\tpassage seven\n8\teight\n"})],
    )
    queries = gzip.compress(b"100\twhat is seven\n101\tunjudged\n")
    _publish(server, monkeypatch, "retrieval", "trec_dl19", [queries, b"100 0 7 2\n100 0 8 0\n"])
    done = _fetch(server, tmp_path, "retrieval", ["trec_dl19"])
    assert done == {"msmarco_passage": True, "trec_dl19": True}  # the collection it needs comes first
    data = retrieval.load_test_set("trec_dl19", tmp_path / "retrieval")
    assert data.queries == {"100": "what is seven"} and data.qrels["100"] == {"7": 2, "8": 0}


def test_bright_and_msmarco_qa_parquet(server, monkeypatch, tmp_path):
    examples = [{"id": "0", "query": "why", "gold_ids": ["a"], "excluded_ids": ["N/A"], "reasoning": "r"}]
    documents = [{"id": "a", "content": "because"}, {"id": "b", "content": "other"}]
    _publish(server, monkeypatch, "retrieval", "biology", [_parquet(examples), _parquet(documents)])
    qa = [
        {
            "query_id": i,
            "query": f"q{i}",
            "passages": {"is_selected": [0, 1], "passage_text": ["no", f"yes {i}"]},
        }
        for i in range(3)
    ]
    _publish(server, monkeypatch, "retrieval", "msmarco_qa", [_parquet(qa), _parquet(qa)])
    _fetch(server, tmp_path, "retrieval", ["biology", "msmarco_qa"])
    data_dir = tmp_path / "retrieval"
    assert retrieval.load_test_set("biology", data_dir).qrels == {"0": {"a": 1}}
    assert retrieval.load_training_pairs("msmarco_qa", data_dir) == [(f"q{i}", f"yes {i}") for i in range(3)]
    assert retrieval.load_dev_set("msmarco_qa", data_dir).sizes()["queries"] == 3


def test_stsb_tarball_and_allnli(server, monkeypatch, tmp_path):
    line = "main-captions\tMSRvid\t2012test\t{i}\t{s}\tA man plays.\tA man is playing.\n"
    files = {
        f"stsbenchmark/sts-{split}.csv": "".join(line.format(i=i, s=i + 1.5) for i in range(2))
        for split in ("train", "dev", "test")
    }
    _publish(server, monkeypatch, "sts", "stsb", [_targz({**files, "stsbenchmark/readme.txt": "r"})])
    nli = "split\tdataset\tfilename\tsentence1\tsentence2\tlabel\ntrain\tSNLI\tx\tA b.\tA c.\tentailment\n"
    _publish(server, monkeypatch, "sts", "allnli", [gzip.compress(nli.encode())])
    _fetch(server, tmp_path, "sts", None)
    paths = fetch.settings("sts", tmp_path.resolve())
    assert sts.load_stsb(paths["data_dir"])["test"]["score"].tolist() == [1.5, 2.5]
    assert len(sts.load_allnli(paths["nli_file"])) == 1


def test_coco_zips(server, monkeypatch, tmp_path):
    def captions(split, ids):
        images = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]
        notes = [{"id": 10 * i, "image_id": i, "caption": f"photo {i}"} for i in ids]
        return json.dumps({"images": images, "annotations": notes})

    annotations = _zip(
        {
            f"annotations/captions_{s}2017.json": captions(s, ids)
            for s, ids in (("train", [1, 2]), ("val", [3]))
        }
    )
    train = _zip({f"train2017/{i:012d}.jpg": b"jpg" for i in (1, 2)})
    val = _zip({"val2017/000000000003.jpg": b"jpg"})
    _publish(server, monkeypatch, "clip", "coco", [annotations, train, val])
    _fetch(server, tmp_path, "clip", None)
    coco = Path(fetch.settings("clip", tmp_path.resolve())["data_dir"])
    assert load_coco_captions(coco / "annotations/captions_train2017.json", coco / "train2017").captions == [
        "photo 1",
        "photo 2",
    ]
    assert load_coco_captions(coco / "annotations/captions_val2017.json", coco / "val2017").n_images == 1


def test_omniglot_zips_and_miniimagenet_pickles(server, monkeypatch, tmp_path):
    from embsym_lib.data import fewshot

    zips = [
        _zip({f"{part}/Alphabet/character01/0101_01.png": b"png"})
        for part in ("images_background", "images_evaluation")
    ]
    _publish(server, monkeypatch, "fewshot", "omniglot", zips)
    pickles = [pickle.dumps({"image_data": [], "class_dict": {}}) for _ in range(3)]
    _publish(server, monkeypatch, "fewshot", "miniimagenet", pickles)
    _fetch(server, tmp_path, "fewshot", None)
    data_dir = fetch.settings("fewshot", tmp_path.resolve())["data_dir"]
    fewshot.check_omniglot(data_dir)
    fewshot.check_miniimagenet(data_dir)


def test_recbole_zip_passes_the_recsys_schema(server, monkeypatch, tmp_path):
    from embsym_lib.families.recsys.spec import RecsysParams, inter_columns, inter_file

    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t5\t0\n"
    _publish(
        server,
        monkeypatch,
        "recsys",
        "ml-1m",
        [_zip({"ml-1m.inter": inter, "ml-1m.user": "user_id:token\n"})],
    )
    _fetch(server, tmp_path, "recsys", ["ml-1m"])
    data_dir = fetch.settings("recsys", tmp_path.resolve())["data_dir"]
    assert inter_columns(inter_file("ml-1m", data_dir)) == ["user_id", "item_id", "rating", "timestamp"]
    RecsysParams(dataset="ml-1m", data_dir=data_dir)


def test_kg_is_left_to_pykeens_own_downloader(monkeypatch, tmp_path):
    import pykeen.datasets as real

    from embsym_lib.families.kg.spec import pykeen_cache_files

    calls = []

    def get_dataset(dataset, dataset_kwargs):
        calls.append((dataset, dataset_kwargs))
        Path(dataset_kwargs["cache_root"], dataset).mkdir(
            parents=True, exist_ok=True
        )  # PyKEEN makes it first
        if dataset != "wn18rr" or len(calls) > 2:  # wn18rr's first download fails: the folder stays empty
            for f in pykeen_cache_files(dataset, dataset_kwargs["cache_root"]):
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text("")
        return types.SimpleNamespace(training=None)

    fake = types.SimpleNamespace(get_dataset=get_dataset, dataset_resolver=real.dataset_resolver)
    monkeypatch.setitem(sys.modules, "pykeen.datasets", fake)
    assert fetch.fetch("kg", root=tmp_path, say=lambda *a: None) == {"fb15k237": True, "wn18rr": True}
    assert calls == [(n, {"cache_root": str(tmp_path.resolve() / "kg")}) for n in ("fb15k237", "wn18rr")]
    # an empty folder is not the data: wn18rr is fetched again, fb15k237 is present
    assert fetch.fetch("kg", root=tmp_path, say=lambda *a: None) == {"fb15k237": False, "wn18rr": True}
    assert fetch.fetch("kg", root=tmp_path, say=lambda *a: None) == {"fb15k237": False, "wn18rr": False}


# ------------------------------------------------------------------------------------------ failures


def test_wrong_checksum_leaves_no_data_set(server, monkeypatch, tmp_path):
    _publish(server, monkeypatch, "retrieval", "scifact", [_beir_zip("scifact")], real_md5=True)
    with pytest.raises(fetch.FetchError, match="checksum mismatch.*scifact.zip"):
        _fetch(server, tmp_path, "retrieval", ["scifact"])
    assert not (tmp_path / "retrieval" / "scifact").exists()
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_unreachable_host_fails_fast_naming_the_source(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(
        fetch.FetchError, match=r"cannot download retrieval/nfcorpus from http://127\.0\.0\.1:\d+/public\.ukp"
    ):
        fetch.fetch(
            "retrieval",
            only=["nfcorpus"],
            root=tmp_path,
            mirror=f"http://127.0.0.1:{port}",
            say=lambda *a: None,
        )
    assert time.monotonic() - start < 10
    assert not (tmp_path / "retrieval" / "nfcorpus").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "fetch", "retrieval", "--only", "nope"], "unknown retrieval data set 'nope'"),
        (["data", "fetch", "synthetic"], "unknown family 'synthetic'"),
        (["data", "fetch", "sts", "--profile", "nope"], "unknown profile 'nope'"),
        (["data", "list", "nope"], "unknown family 'nope'"),
    ],
)
def test_bad_names_fail_before_any_download(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fetch, "_download", lambda *a, **k: pytest.fail("downloaded"))
    assert cli.main([*argv, "--root", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_manual_sets_are_named_not_downloaded(tmp_path):
    with pytest.raises(fetch.FetchError, match="rag_nq: no canonical download"):
        fetch.fetch("retrieval", only=["rag_nq"], root=tmp_path, say=lambda *a: None)


def test_data_list_reports_present_missing_and_size(server, monkeypatch, tmp_path, capsys):
    _publish(server, monkeypatch, "sts", "allnli", [b"x" * 2048])
    _fetch(server, tmp_path, "sts", ["allnli"])
    assert cli.main(["data", "list", "sts", "--root", str(tmp_path)]) == 0
    lines = {line.split()[1]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["allnli"][3:6] == ["yes", "2.0", "KB"] and lines["stsb"][3] == "missing"
    assert lines["stsb"][-1] == str(tmp_path.resolve() / "sts" / "stsb")


@pytest.mark.parametrize("family", ["retrieval", "sts", "clip", "kg", "fewshot", "recsys"])
def test_paper_profile_reads_where_fetch_writes_by_default(family):
    """Without --root or $EMBSYM_DATA, the paper profile's data parameters are the fetch's layout."""
    from embsym_lib.records import PROJECT_ROOT, project_path

    doc = yaml.safe_load((PARAMS / "paper" / f"{family}.yaml").read_text())
    expected = fetch.settings(family, PROJECT_ROOT / "data")
    assert {k: str(project_path(doc["parameters"][k])) for k in expected} == expected


def test_paper_run_without_data_names_the_fetch_command(capsys, monkeypatch):
    monkeypatch.delenv("EMBSYM_DATA", raising=False)
    if (fetch.data_root() / "retrieval").exists():
        pytest.skip("this checkout has paper retrieval data under its data root")
    assert cli.main(["run", "retrieval", "--profile", "paper"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "embsym data fetch retrieval --profile paper" in err
