"""Fetching data sources named in the config, and pulling images out of image archives.

A source is a config entry ``{url: ..., sha256: ...}`` (``sha256`` optional). ``url`` is
an ``http(s)://`` URL, a ``file://`` URL or a plain local path. :func:`fetch_source`
places a verified copy at the destination, or raises :class:`SourceError` and leaves
nothing there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .errors import InputError, SourceError
from .io import atomic_path

KINDS = ("json", "tsv", "zip", "binary")
CHUNK = 1 << 20
HTTP_TIMEOUT_S = 60
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
_HTML_PREFIXES = (b"<!doctype html", b"<html")
_GITHUB_RAW = re.compile(
    r"^https?://(?:raw\.githubusercontent\.com/(?P<o1>[^/]+)/(?P<r1>[^/]+)/(?P<rest1>.+)"
    r"|github\.com/(?P<o2>[^/]+)/(?P<r2>[^/]+)/(?:raw|blob)/(?P<rest2>.+))$"
)


def _logger(log) -> Callable[[str], None]:
    if log is None:
        return lambda message: None
    if hasattr(log, "info"):
        return log.info
    if callable(log):
        return log
    raise TypeError(f"log must be a logger, a callable or None, not {type(log).__name__}")


def is_remote(url: str) -> bool:
    """Whether a source URL is fetched over HTTP(S) rather than read from a local path."""
    return url.lower().startswith(("http://", "https://"))


def local_path(url: str) -> Path:
    """The local file a ``file://`` URL or a plain path names."""
    if url.lower().startswith("file://"):
        parsed = urllib.parse.urlparse(url)
        host = "" if parsed.netloc in ("", "localhost") else parsed.netloc
        return Path(urllib.request.url2pathname(host + parsed.path))
    return Path(os.path.expanduser(url))


def lfs_download_hint(url: str) -> str:
    """Where the real content of a Git LFS file named by ``url`` can be had."""
    match = _GITHUB_RAW.match(url)
    if match:
        owner = match.group("o1") or match.group("o2")
        repo = match.group("r1") or match.group("r2")
        rest = match.group("rest1") or match.group("rest2")
        return (
            f"use the LFS media URL https://media.githubusercontent.com/media/{owner}/{repo}/{rest} "
            "or a copy on a dataset hub, or download the file yourself and give its local path"
        )
    return (
        "use the LFS media URL (https://media.githubusercontent.com/media/<owner>/<repo>/<ref>/<path>) "
        "or a copy on a dataset hub, or download the file yourself and give its local path"
    )


def _download(url: str, tmp: Path, name: str, say: Callable[[str], None]) -> None:
    from tqdm.auto import tqdm

    say(f"downloading {name} from {url}")
    request = urllib.request.Request(url, headers={"User-Agent": "clip-interp/0.1"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response, open(tmp, "wb") as out:
            total = response.headers.get("Content-Length")
            with tqdm(total=int(total) if total and total.isdigit() else None, unit="B",
                      unit_scale=True, desc=name, leave=False) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise SourceError(
            f"config key {name!r}: downloading {url} failed with HTTP {exc.code} ({exc.reason}). "
            "Check the URL in the config, or download the file yourself and give its local path."
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(
            f"config key {name!r}: downloading {url} failed ({reason}). Check the URL and the network, "
            "or download the file yourself and give its local path."
        ) from exc


def sha256_of(path: Path) -> str:
    """The SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_body(path: Path, url: str, name: str, kind: str) -> None:
    """Reject an HTML page or a Git LFS pointer delivered instead of the data."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    stripped = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if stripped.startswith(LFS_POINTER_PREFIX):
        raise SourceError(
            f"config key {name!r}: {url} is a Git LFS pointer file, not the {kind} data itself "
            f"(it starts with {LFS_POINTER_PREFIX.decode()!r}). Fix: {lfs_download_hint(url)}."
        )
    if stripped.lower().startswith(_HTML_PREFIXES):
        raise SourceError(
            f"config key {name!r}: {url} returned an HTML page where {kind} data was expected "
            "(often a login, preview or error page). Fix: point the URL at the raw file "
            "(a direct download link), or download the file yourself and give its local path."
        )


JSON_SHAPES = ("object", "array")


def _check_json_shape(data: Any, url: str, name: str, shape: str | None) -> None:
    """The top level of a JSON source is a non-empty object (or array) when ``shape`` says so."""
    if shape is None:
        return
    wanted = dict if shape == "object" else list
    if not isinstance(data, wanted):
        found = "an object" if isinstance(data, dict) else "a list" if isinstance(data, list) else type(data).__name__
        raise SourceError(
            f"config key {name!r}: {url} holds {found} at the top level, but a JSON {shape} of entries "
            f"is expected ({'instance key -> entry' if shape == 'object' else 'one item per entry'}). "
            "Check that the URL points at the right file."
        )
    if not data:
        raise SourceError(
            f"config key {name!r}: {url} is an empty JSON {shape} (no entries). Check that the URL points "
            "at the complete file, or fetch it again."
        )


def _check_kind(path: Path, url: str, name: str, kind: str, json_shape: str | None = None) -> None:
    """Cheap format check: JSON parses (with the top-level ``json_shape``), a zip is a zip archive,
    a TSV has a tabbed header."""
    if kind == "json":
        try:
            with open(path, "rb") as handle:
                data = json.load(handle)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SourceError(
                f"config key {name!r}: {url} is not valid JSON ({exc}). Check that the URL points "
                "at the JSON file itself."
            ) from exc
        _check_json_shape(data, url, name, json_shape)
    elif kind == "zip":
        if not zipfile.is_zipfile(path):
            raise SourceError(
                f"config key {name!r}: {url} is not a zip archive. Check that the URL points at "
                "the .zip file itself and that the download is complete."
            )
    elif kind == "tsv":
        with open(path, "rb") as handle:
            header = handle.readline()
        if b"\t" not in header:
            raise SourceError(
                f"config key {name!r}: {url} does not look like a TSV file: its first line "
                f"{header[:120]!r} has no tab. Check that the URL points at the tab-separated file."
            )


def fetch_source(spec: Mapping[str, Any] | str, dest: str | os.PathLike, *, name: str, kind: str,
                 log=None, json_shape: str | None = None) -> dict[str, Any]:
    """Copy or download the source ``spec`` (config key ``name``) to ``dest`` and verify it.

    Checks, in order: the body is neither a Git LFS pointer nor an HTML page; its SHA-256
    equals ``spec["sha256"]`` when given; it passes the cheap check for ``kind`` (one of
    ``json``, ``tsv``, ``zip``, ``binary``; for ``json`` with ``json_shape`` ``"object"`` or
    ``"array"``, a non-empty top level of that type). Returns ``{"path", "url", "sha256", "bytes"}``.
    On any failure ``dest`` does not exist afterwards.
    """
    if kind not in KINDS:
        raise InputError(f"config key {name!r}: unknown source kind {kind!r}; use one of {', '.join(KINDS)}")
    if json_shape is not None and json_shape not in JSON_SHAPES:
        raise InputError(f"config key {name!r}: unknown JSON shape {json_shape!r}; use one of {', '.join(JSON_SHAPES)}")
    if isinstance(spec, str):
        spec = {"url": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("url"), str) or not spec["url"].strip():
        raise InputError(
            f"config key {name!r}: expected a mapping with a non-empty 'url' (and optionally 'sha256'), "
            f"got {spec!r}"
        )
    url = spec["url"].strip()
    expected = spec.get("sha256")
    if expected is not None and (not isinstance(expected, str)
                                 or not re.fullmatch(r"[0-9a-fA-F]{64}", expected.strip())):
        raise InputError(
            f"config key {name!r}: sha256 {expected!r} is not a 64-digit hex SHA-256; fix it or remove it"
        )
    say = _logger(log)
    dest = Path(dest)
    try:
        with atomic_path(dest) as tmp:
            if is_remote(url):
                _download(url, tmp, name, say)
            else:
                src = local_path(url)
                if not src.is_file():
                    raise SourceError(
                        f"config key {name!r}: local source {str(src)!r} (from {url!r}) does not exist "
                        "or is not a file. Fix the path in the config, or put the file there."
                    )
                say(f"copying {name} from {src}")
                shutil.copyfile(src, tmp)
            _check_body(tmp, url, name, kind)
            actual = sha256_of(tmp)
            if expected is not None and actual != expected.strip().lower():
                raise SourceError(
                    f"config key {name!r}: SHA-256 of {url} is {actual}, but the config expects "
                    f"{expected.strip().lower()}. Fix: correct the sha256 in the config if the file is "
                    "the intended one, or correct the URL if it is not."
                )
            _check_kind(tmp, url, name, kind, json_shape)
            size = tmp.stat().st_size
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        raise
    say(f"{name}: {size} bytes, sha256 {actual}")
    return {"path": str(dest), "url": url, "sha256": actual, "bytes": size}


# A local file up to this size is fingerprinted by its content, a larger one by its size and time.
HASHED_FINGERPRINT_BYTES = 256 << 20


def local_fingerprint(url: str) -> dict[str, Any] | None:
    """What identifies the current content of a local source (None for an http(s) source).

    A rule that takes this as a ``params:`` entry re-runs when the source is changed in place.
    A file: its SHA-256 (files above :data:`HASHED_FINGERPRINT_BYTES`: size and modification time
    in ns). A folder: a SHA-256 over every file's relative path, size and modification time, so a
    replaced, added or removed file changes it. A path that does not exist: ``{"missing": path}``.
    """
    if is_remote(url):
        return None
    path = local_path(url)
    if path.is_file():
        stat = path.stat()
        if stat.st_size <= HASHED_FINGERPRINT_BYTES:
            return {"file": str(path), "sha256": sha256_of(path)}
        return {"file": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if path.is_dir():
        digest = hashlib.sha256()
        count = 0
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for fname in sorted(files):
                stat = (Path(root) / fname).stat()
                relative = os.path.relpath(os.path.join(root, fname), path)
                digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
                count += 1
        return {"folder": str(path), "files": count, "listing_sha256": digest.hexdigest()}
    return {"missing": str(path)}


def _wanted_names(wanted: Iterable[str]) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for item in wanted:
        if not isinstance(item, str) or not item or item in (".", "..") or "/" in item or "\\" in item:
            raise InputError(
                f"wanted image name {item!r} is not a plain file name; give base names such as "
                "'v7w_2371044.jpg'"
            )
        if item not in seen:
            seen.add(item)
            names.append(item)
    return names


def _missing_error(missing: list[str], where: str, total: int) -> SourceError:
    shown = ", ".join(repr(m) for m in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return SourceError(
        f"{len(missing)} of {total} wanted images are not in {where}: {shown}{more}. Check that the "
        "archive or folder is the complete image set the dataset refers to (e.g. the full "
        "visual7w_images.zip), re-download it if it is truncated, or drop the instances whose "
        "images you do not have."
    )


def _same_file_state(target: Path, source: Path) -> bool:
    """Whether ``target`` is a copy of ``source`` made by :func:`shutil.copy2` that is still current
    (same size and modification time), so an image replaced in the source folder is copied again."""
    if not target.is_file():
        return False
    t, s = target.stat(), source.stat()
    return t.st_size == s.st_size and t.st_mtime_ns == s.st_mtime_ns


def extract_images(archive_or_dir: str | os.PathLike, wanted: Iterable[str],
                   out_dir: str | os.PathLike) -> dict[str, str]:
    """Copy the images named in ``wanted`` from a zip archive or a folder into ``out_dir``.

    Images are matched on their base name wherever they sit in the archive or folder tree
    (e.g. ``images/v7w_2371044.jpg`` matches ``v7w_2371044.jpg``); when a base name occurs
    more than once the first in archive order (folder walk order) is used. Every wanted
    image must be present, otherwise nothing is extracted. Each file is written atomically;
    one already present in ``out_dir`` is kept when it has the same size (from a zip) or the same
    size and modification time (from a folder, copied with its time). Returns base name -> path.
    """
    source = Path(archive_or_dir)
    names = _wanted_names(wanted)
    out = Path(out_dir)
    result: dict[str, str] = {}
    if source.is_dir():
        index: dict[str, Path] = {}
        for root, dirs, files in os.walk(source):
            dirs.sort()
            for fname in sorted(files):
                index.setdefault(fname, Path(root) / fname)
        missing = [n for n in names if n not in index]
        if missing:
            raise _missing_error(missing, f"folder {str(source)!r}", len(names))
        out.mkdir(parents=True, exist_ok=True)
        for n in names:
            target = out / n
            if not _same_file_state(target, index[n]):
                with atomic_path(target) as tmp:
                    shutil.copy2(index[n], tmp)
            result[n] = str(target)
        return result
    if not source.exists():
        raise SourceError(
            f"image source {str(source)!r} does not exist; fetch the image archive first or fix its path"
        )
    if not zipfile.is_zipfile(source):
        raise SourceError(
            f"image source {str(source)!r} is neither a folder nor a zip archive; give the image "
            "zip (e.g. visual7w_images.zip) or a folder of images"
        )
    try:
        with zipfile.ZipFile(source) as archive:
            members: dict[str, zipfile.ZipInfo] = {}
            for info in archive.infolist():
                base = info.filename.rstrip("/").rsplit("/", 1)[-1]
                if info.is_dir() or "__MACOSX/" in info.filename or base.startswith("._"):
                    continue
                members.setdefault(base, info)
            missing = [n for n in names if n not in members]
            if missing:
                raise _missing_error(missing, f"zip archive {str(source)!r}", len(names))
            out.mkdir(parents=True, exist_ok=True)
            for n in names:
                info = members[n]
                target = out / n
                if not (target.is_file() and target.stat().st_size == info.file_size):
                    with atomic_path(target) as tmp, archive.open(info) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
                result[n] = str(target)
    except zipfile.BadZipFile as exc:
        raise SourceError(
            f"zip archive {str(source)!r} is corrupt ({exc}); download it again"
        ) from exc
    return result
