import contextlib
import functools
import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest

from clip_interp.errors import InputError, SourceError
from clip_interp.sources import extract_images, fetch_source, lfs_download_hint

LFS_BODY = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 12345\n"
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def src(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    return folder


@pytest.fixture
def out(tmp_path):
    return tmp_path / "out"


def test_local_path_copy_and_hash(src, out):
    data = b'{"a": 1}'
    (src / "x.json").write_bytes(data)
    info = fetch_source({"url": str(src / "x.json"), "sha256": sha(data)}, out / "x.json", name="valse", kind="json")
    assert (out / "x.json").read_bytes() == data
    assert info["sha256"] == sha(data) and info["bytes"] == len(data)
    assert leftovers(out) == ["x.json"]


def test_file_url_copy(src, out):
    data = b"premise\thypothesis\tlabel\nA.\tNot A.\t1\n"
    (src / "c.tsv").write_bytes(data)
    logged = []
    fetch_source({"url": (src / "c.tsv").as_uri()}, out / "c.tsv", name="cannot", kind="tsv", log=logged.append)
    assert (out / "c.tsv").read_bytes() == data
    assert logged


def test_sha256_mismatch_names_key_hashes_and_fix(src, out):
    data = b'{"a": 1}'
    (src / "x.json").write_bytes(data)
    wrong = "0" * 64
    with pytest.raises(SourceError) as err:
        fetch_source({"url": str(src / "x.json"), "sha256": wrong}, out / "x.json", name="valse_existence", kind="json")
    message = str(err.value)
    assert "valse_existence" in message and wrong in message and sha(data) in message
    assert "sha256" in message and "URL" in message
    assert leftovers(out) == []


def test_failure_removes_previous_file_at_dest(src, out):
    (src / "x.json").write_bytes(b"{}")
    out.mkdir()
    (out / "x.json").write_bytes(b"old")
    with pytest.raises(SourceError):
        fetch_source({"url": str(src / "x.json"), "sha256": "1" * 64}, out / "x.json", name="k", kind="json")
    assert leftovers(out) == []


@pytest.mark.parametrize("body", [b"<!DOCTYPE html><html><body>Sign in</body></html>",
                                  b"\n   <HTML><head></head></html>"])
def test_html_body_rejected(src, out, body):
    (src / "page").write_bytes(body)
    with pytest.raises(SourceError) as err:
        fetch_source({"url": str(src / "page")}, out / "x.zip", name="images", kind="zip")
    assert "HTML" in str(err.value) and "images" in str(err.value)
    assert leftovers(out) == []


def test_lfs_pointer_instead_of_tsv(src, out):
    (src / "cannot.tsv").write_text(LFS_BODY)
    with pytest.raises(SourceError) as err:
        fetch_source({"url": str(src / "cannot.tsv")}, out / "cannot.tsv", name="cannot", kind="tsv")
    message = str(err.value)
    assert "LFS" in message and "media.githubusercontent.com" in message and "cannot" in message
    assert leftovers(out) == []


def test_lfs_hint_names_media_url():
    hint = lfs_download_hint("https://raw.githubusercontent.com/own/rep/main/data/file.tsv")
    assert "https://media.githubusercontent.com/media/own/rep/main/data/file.tsv" in hint
    hint = lfs_download_hint("https://github.com/own/rep/blob/v1/file.tsv")
    assert "https://media.githubusercontent.com/media/own/rep/v1/file.tsv" in hint


def test_missing_local_file(tmp_path, out):
    missing = tmp_path / "nope" / "existence.json"
    with pytest.raises(SourceError) as err:
        fetch_source({"url": str(missing)}, out / "e.json", name="valse_existence", kind="json")
    assert str(missing) in str(err.value) and "valse_existence" in str(err.value)
    assert leftovers(out) == []
    with pytest.raises(SourceError):
        fetch_source({"url": missing.as_uri()}, out / "e.json", name="valse_existence", kind="json")
    assert leftovers(out) == []


@pytest.mark.parametrize("kind, body", [("json", b"{not json"), ("zip", b"PK but not really"),
                                        ("tsv", b"no tabs here\nat all\n")])
def test_kind_checks(src, out, kind, body):
    (src / "f").write_bytes(body)
    with pytest.raises(SourceError) as err:
        fetch_source({"url": str(src / "f")}, out / "f", name="thing", kind=kind)
    assert "thing" in str(err.value)
    assert leftovers(out) == []


def test_binary_kind_accepts_anything(src, out):
    (src / "f").write_bytes(b"\x00\x01")
    fetch_source(str(src / "f"), out / "f", name="w", kind="binary")
    assert (out / "f").read_bytes() == b"\x00\x01"


def test_bad_config_entries(src, out):
    (src / "f").write_bytes(b"{}")
    with pytest.raises(InputError, match="kind"):
        fetch_source({"url": str(src / "f")}, out / "f", name="k", kind="csv")
    with pytest.raises(InputError, match="'url'"):
        fetch_source({"sha256": "0" * 64}, out / "f", name="k", kind="json")
    with pytest.raises(InputError, match="sha256"):
        fetch_source({"url": str(src / "f"), "sha256": "abc"}, out / "f", name="k", kind="json")
    assert leftovers(out) == []


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(folder: Path):
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_http_download(src, out, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    data = json.dumps({"k": list(range(1000))}).encode()
    (src / "e.json").write_bytes(data)
    (src / "login.html").write_bytes(b"<!doctype html><title>login</title>")
    with serve(src) as base:
        info = fetch_source({"url": f"{base}/e.json", "sha256": sha(data)}, out / "e.json", name="valse", kind="json")
        assert (out / "e.json").read_bytes() == data and info["bytes"] == len(data)
        with pytest.raises(SourceError, match="HTTP 404"):
            fetch_source({"url": f"{base}/missing.json"}, out / "m.json", name="valse", kind="json")
        with pytest.raises(SourceError, match="HTML"):
            fetch_source({"url": f"{base}/login.html"}, out / "l.json", name="valse", kind="json")
    assert leftovers(out) == ["e.json"]


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images/", b"")
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_extract_from_zip_matches_base_names(tmp_path):
    archive = make_zip(tmp_path / "visual7w_images.zip", {
        "images/v7w_1.jpg": b"one", "images/v7w_2.jpg": b"two", "images/v7w_3.jpg": b"three",
        "__MACOSX/images/._v7w_1.jpg": b"junk",
    })
    got = extract_images(archive, ["v7w_1.jpg", "v7w_3.jpg", "v7w_1.jpg"], tmp_path / "img")
    assert sorted(got) == ["v7w_1.jpg", "v7w_3.jpg"]
    assert leftovers(tmp_path / "img") == ["v7w_1.jpg", "v7w_3.jpg"]
    assert (tmp_path / "img" / "v7w_1.jpg").read_bytes() == b"one"
    again = extract_images(archive, ["v7w_3.jpg"], tmp_path / "img")
    assert Path(again["v7w_3.jpg"]).read_bytes() == b"three"


def test_extract_from_directory(tmp_path):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    (tmp_path / "imgs" / "sub" / "a.jpg").write_bytes(b"a")
    (tmp_path / "imgs" / "b.jpg").write_bytes(b"b")
    got = extract_images(tmp_path / "imgs", ["a.jpg"], tmp_path / "img")
    assert Path(got["a.jpg"]).read_bytes() == b"a"
    assert leftovers(tmp_path / "img") == ["a.jpg"]


def test_missing_image_in_zip(tmp_path):
    archive = make_zip(tmp_path / "v.zip", {"images/v7w_1.jpg": b"one"})
    wanted = ["v7w_1.jpg"] + [f"v7w_9{i}.jpg" for i in range(8)]
    with pytest.raises(SourceError) as err:
        extract_images(archive, wanted, tmp_path / "img")
    message = str(err.value)
    assert "8 of 9" in message and "v7w_90.jpg" in message and "3 more" in message
    assert leftovers(tmp_path / "img") == []


def test_missing_image_in_directory(tmp_path):
    (tmp_path / "imgs").mkdir()
    with pytest.raises(SourceError, match="1 of 1"):
        extract_images(tmp_path / "imgs", ["x.jpg"], tmp_path / "img")
    assert leftovers(tmp_path / "img") == []


def test_extract_bad_inputs(tmp_path):
    (tmp_path / "not.zip").write_bytes(b"plain")
    with pytest.raises(SourceError, match="neither a folder nor a zip"):
        extract_images(tmp_path / "not.zip", ["a.jpg"], tmp_path / "img")
    with pytest.raises(SourceError, match="does not exist"):
        extract_images(tmp_path / "absent.zip", ["a.jpg"], tmp_path / "img")
    archive = make_zip(tmp_path / "v.zip", {"images/a.jpg": b"a"})
    with pytest.raises(InputError, match="plain file name"):
        extract_images(archive, ["../a.jpg"], tmp_path / "img")
    assert leftovers(tmp_path / "img") == []
