"""``embsym data fetch`` / ``embsym data list``: download a profile's data sets (``data/sources.py``) into
one data root and convert them into the layouts the loaders read.

The data root is ``--root``, else ``$EMBSYM_DATA``, else ``<project>/data``; family ``f`` lives in
``<root>/<f>``, and ``settings`` gives the ``--set`` values that point a run there. Every download goes
through pooch (checksum, progress bar, a temporary file renamed only once complete and verified); the
converted data set is built in ``<root>/<f>/.partial-<name>`` and moved into place only when whole, so a
failed or interrupted fetch leaves nothing that looks present, and a present data set is skipped.
``$EMBSYM_DATA_MIRROR`` (or ``mirror=``) reads every URL from ``<mirror>/<host>/<path>`` instead.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from .data.sources import FAMILY_SETTINGS, OFFLINE, SOURCES, TRAINING_DATA, Remote, Source
from .records import DATA_ENV, PROJECT_ROOT

MIRROR_ENV = "EMBSYM_DATA_MIRROR"
PARAMS_DIR = PROJECT_ROOT / "params"
TIMEOUT_S = 30  # per request; a host that does not answer fails the fetch instead of hanging


class FetchError(RuntimeError):
    """A fetch that cannot go on: unknown name, unreachable source, wrong checksum, a manual data set."""


def data_root(root: str | Path | None = None) -> Path:
    if root:
        return Path(root).expanduser().resolve()
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser().resolve() if env else PROJECT_ROOT / "data"


def settings(family: str, root: Path) -> dict[str, str]:
    """The parameters that point ``family``'s runs at the data under ``root``."""
    return {
        k: str(root / family / v) if v else str(root / family) for k, v in FAMILY_SETTINGS[family].items()
    }


def profile_datasets(family: str, profile: str = "paper", params_dir: Path = PARAMS_DIR) -> list[str]:
    """The registry names the grid points of ``profile`` use for ``family``, in order of first use (offline
    profiles: none). Read from the expanded, validated grid (``params.expand``), so a data set that comes
    from a schema default counts as much as one the params file names."""
    from .params import expand
    from .schema import ParamError

    try:
        points = expand(family, profile, params_dir=params_dir, check_data=False)
    except ParamError as e:
        raise FetchError(str(e)) from None
    groups: list[list[str]] = [[], [], []]  # retrieval: test sets, training sources, RAG sets
    for p in (point.params for point in points):
        if family == "retrieval":
            wanted = [
                [n for n in p["test_sets"] if not str(n).startswith("path:")],
                [TRAINING_DATA.get(p["data_source"], p["data_source"])],
                [f"rag_{n}" for n in p["rag_sets"] if not str(n).startswith("pydoc")],
            ]
        elif family == "sts":
            wanted = [[p["dataset"]], ["allnli"] if p.get("nli_file") else [], []]
        else:
            wanted = [[p.get("dataset")], [], []]
        for group, names in zip(groups, wanted, strict=True):
            group += [n for n in names if (family, n) in SOURCES and n not in group]
    return [n for group in groups for n in group]


def resolve(family: str, profile: str = "paper", only: list[str] | None = None, params_dir=PARAMS_DIR):
    """The sources to fetch, the ones they need first; one clear error before any download."""
    if family not in FAMILY_SETTINGS:
        raise FetchError(
            f"unknown family {family!r}; families with data to fetch: {', '.join(FAMILY_SETTINGS)}"
        )
    names = profile_datasets(family, profile, params_dir)
    if only:
        known = [n for (f, n) in SOURCES if f == family]
        unknown = [n for n in only if n not in known]
        if unknown:
            raise FetchError(f"unknown {family} data set {unknown[0]!r}; known: {', '.join(known)}")
        names = list(only)
    out: list[Source] = []
    for name in names:
        for dep in (*SOURCES[family, name].needs, name):
            if SOURCES[family, dep] not in out:
                out.append(SOURCES[family, dep])
    return out


def present(source: Source, root: Path) -> bool:
    if source.library == "pykeen":  # its folder alone is no sign: PyKEEN makes it before it downloads
        from .families.kg.spec import pykeen_cache_files

        return all(f.is_file() for f in pykeen_cache_files(source.name, str(root / source.family)))
    return all((root / source.family / p).exists() for p in source.paths)


def disk_size(source: Source, root: Path) -> int:
    total = 0
    for p in source.paths:
        path = root / source.family / p
        files = [path] if path.is_file() else (f for f in path.rglob("*") if f.is_file())
        total += sum(f.stat().st_size for f in files) if path.exists() else 0
    return total


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _url(remote: Remote, mirror: str | None) -> str:
    return f"{mirror.rstrip('/')}/{remote.url.split('://', 1)[1]}" if mirror else remote.url


def _download(
    remote: Remote, source: Source, downloads: Path, mirror: str | None, progress: bool, i: int = 0
) -> Path:
    import pooch
    import requests

    url = _url(remote, mirror)
    try:
        return Path(
            pooch.retrieve(
                url,
                known_hash=f"md5:{remote.md5}" if remote.md5 else None,
                fname=f"{source.family}-{source.name}-{i}-{Path(remote.url).name}",  # BRIGHT's two parts share a name
                path=downloads,
                downloader=pooch.HTTPDownloader(progressbar=progress, timeout=TIMEOUT_S),
            )
        )
    except requests.exceptions.RequestException as e:
        reason = type(e).__name__ if isinstance(e, requests.ConnectionError) else str(e)
        raise FetchError(f"cannot download {source.family}/{source.name} from {url} ({reason})") from None
    except ValueError as e:  # pooch: the file's hash differs from the published one
        raise FetchError(f"{source.family}/{source.name}: checksum mismatch for {url}: {e}") from None


def _unpack(archive: Path, remote: Remote, staging: Path) -> None:
    target = staging / remote.into
    if remote.fmt == "file":
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, target)
        return
    if remote.fmt == "gz":
        target.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(archive, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return
    raw = staging / ".extract"
    if remote.fmt == "zip":
        with zipfile.ZipFile(archive) as z:
            z.extractall(raw)
    else:
        with tarfile.open(archive) as t:
            t.extractall(raw, filter="data")
    # an archive with its own top folder (BEIR's <name>/, STS-B's stsbenchmark/) or without one (RecBole's)
    top = raw / remote.strip if remote.strip and (raw / remote.strip).is_dir() else raw
    target.mkdir(parents=True, exist_ok=True)
    for item in top.iterdir():
        os.replace(item, target / item.name)
    shutil.rmtree(raw)


def _library_fetch(source: Source, root: Path) -> None:
    if source.library == "pykeen":
        from pykeen.datasets import get_dataset

        get_dataset(dataset=source.name, dataset_kwargs={"cache_root": str(root / source.family)}).training  # noqa: B018 (loads, so downloads)
        return
    raise FetchError(f"no fetcher for library {source.library!r}")


def fetch_one(
    source: Source, root: Path, mirror: str | None = None, progress: bool = True, say: Callable = print
) -> bool:
    """Fetch and convert one data set; False when it was already present (nothing done)."""
    where = root / source.family
    if present(source, root):
        say(f"  {source.family}/{source.name}: present at {where / source.paths[0]}, nothing to do")
        return False
    if source.manual:
        raise FetchError(f"{source.family}/{source.name} cannot be fetched: {source.manual} (under {where})")
    say(f"  {source.family}/{source.name}: {source.origin} -> {where}")
    if source.library:
        _library_fetch(source, root)
        return True
    staging = where / f".partial-{source.name}"
    downloads = root / ".downloads"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        archives = [
            (r, _download(r, source, downloads, mirror, progress, i)) for i, r in enumerate(source.remotes)
        ]
        for remote, archive in archives:
            _unpack(archive, remote, staging)
        for p in source.paths:
            if not (staging / p).exists():
                raise FetchError(f"{source.family}/{source.name}: the download holds no {p}")
        for p in source.paths:
            (where / p).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / p, where / p)
        for _, archive in archives:
            archive.unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def fetch(
    family: str,
    profile: str = "paper",
    only: list[str] | None = None,
    root: str | Path | None = None,
    mirror: str | None = None,
    progress: bool = True,
    params_dir: Path = PARAMS_DIR,
    say: Callable = print,
) -> dict[str, bool]:
    """Fetch every data set ``profile`` names for ``family`` (or ``only`` these); {name: downloaded?}."""
    sources = resolve(family, profile, only, params_dir)
    root = data_root(root)
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    manual = [s.name for s in sources if s.manual and not present(s, root)]
    say(f"embsym: {len(sources)} {family} data set(s) of profile {profile} under {root / family}")
    done = {s.name: fetch_one(s, root, mirror, progress, say) for s in sources if not s.manual}
    if not sources:
        say(f"  profile {profile}: {OFFLINE.get(family, 'nothing to fetch')}")
    set_args = " ".join(f"--set {k}={v}" for k, v in settings(family, root).items())
    say(f"embsym: run with {set_args}")
    if manual:
        raise FetchError(
            "not fetched (no canonical download; see docs/data.md): "
            + "; ".join(f"{n}: {SOURCES[family, n].manual}" for n in manual)
        )
    return done


def table(families: list[str], profile: str = "paper", root=None, params_dir=PARAMS_DIR) -> list[dict]:
    """One row per data set a profile needs: family, name, source, layout path, present, size on disk."""
    root = data_root(root)
    rows = []
    for family in families:
        if family not in FAMILY_SETTINGS and family not in OFFLINE:
            raise FetchError(f"unknown family {family!r}; valid families are: {', '.join(OFFLINE)}")
        sources = resolve(family, profile, None, params_dir) if family in FAMILY_SETTINGS else []
        if not sources:
            kind = OFFLINE[family].split(" ")[0] if profile == "offline" or family == "synthetic" else "none"
            rows.append(
                dict(family=family, name="-", source=OFFLINE[family], path="-", present=kind, size="")
            )
        for s in sources:
            here = present(s, root)
            rows.append(
                dict(
                    family=family,
                    name=s.name,
                    source=s.origin,
                    path=str(root / family / s.paths[0]),
                    present="yes" if here else "missing",
                    size=_human(disk_size(s, root)) if here else "",
                )
            )
    return rows


def format_table(rows: list[dict]) -> str:
    cols = ("family", "name", "source", "present", "size", "path")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(line.rstrip() for line in lines)
