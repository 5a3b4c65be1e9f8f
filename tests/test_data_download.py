"""`asc-bench data download` / `data check` against a local HTTP server started here (no network).

The server serves archives made by the test: a good one, a corrupt one, and one whose first transfer is
cut off half-way (Content-Length promises the whole file), which the next run must resume with Range.
"""
from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from conftest import cli
from dataset_miniatures import esc50


class Server:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()      # paths whose next GET stops half-way
        self.ranges: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):   # quiet
                pass

            def do_GET(self):
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    server.ranges.append((self.path, rng))
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if self.path in server.cut_once:
                    server.cut_once.discard(self.path)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def server():
    s = Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def esc50_zip(tmp_path: Path) -> bytes:
    """A miniature ESC-50 packed like GitHub's master.zip (top folder ESC-50-master/)."""
    src = tmp_path / "src"
    mini = esc50(src, per_fold=4, seconds=0.05)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(mini.base.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(src).as_posix())
    return buf.getvalue()


def registry(tmp_path: Path, server: Server, path: str, md5: str | None) -> Path:
    entry = {"name": "esc50", "dataset": "esc50",
             "files": [{"name": "ESC-50-master.zip", "url": server.url + path, "unpack": "zip",
                        **({"md5": md5} if md5 else {})}]}
    file = tmp_path / f"registry-{path.strip('/').replace('/', '_')}.yaml"
    file.write_text(yaml.safe_dump({"sources": [entry]}))
    return file


@pytest.mark.slow
def test_download_verifies_unpacks_and_the_layout_serves_the_tasks(tmp_path, server):
    body = esc50_zip(tmp_path)
    server.files["/good.zip"] = body
    reg = registry(tmp_path, server, "/good.zip", hashlib.md5(body).hexdigest())
    target = tmp_path / "data" / "esc50"
    res = cli("data", "download", "esc50", "--to", str(target), "--registry", str(reg))
    assert "1 file(s) downloaded and verified" in res.stdout
    assert (target / "ESC-50-master" / "meta" / "esc50.csv").is_file()
    assert not (target / ".downloads" / "ESC-50-master.zip").exists(), "archive kept without --keep-archives"
    # the download command ends with the check; the tasks on ESC-50 accept the data as unpacked
    assert "task esc50-5way1shot: ok" in res.stdout and "120 clips, 6 classes" in res.stdout
    check = cli("data", "check", "esc50", "--data-root", str(target), "--decode")
    assert "decoded 120 file(s), 0 failed" in check.stdout
    run = cli("run", "--encoder", "logmel-stats", "--task", "esc50-5way1shot", "--param", "episodes=20",
              "--data-root", str(target), "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "r"),
              "--json")
    assert json.loads(run.stdout)["dataset"]["n_clips"] == 120
    again = cli("data", "download", "esc50", "--to", str(target), "--registry", str(reg))
    assert "0 file(s) downloaded and verified, 1 already done" in again.stdout


def test_corrupt_archive_is_refused_by_md5_and_by_archive_integrity(tmp_path, server):
    body = bytearray(esc50_zip(tmp_path))
    good_md5 = hashlib.md5(body).hexdigest()
    body[len(body) // 3] ^= 0xFF          # one flipped byte inside a member's compressed data
    server.files["/bad.zip"] = bytes(body)
    target = tmp_path / "data"
    res = cli("data", "download", "esc50", "--to", str(target), "--registry",
              str(registry(tmp_path, server, "/bad.zip", good_md5)), check=False)
    assert res.returncode == 1
    assert "ESC-50-master.zip" in res.stderr and "failed verification" in res.stderr and "deleted" in res.stderr
    assert not list((target / ".downloads").glob("ESC-50-master.zip*"))
    assert not (target / "ESC-50-master").exists()
    # no md5 in the registry (as for the built-in sources): the zip CRCs catch it
    res = cli("data", "download", "esc50", "--to", str(target), "--registry",
              str(registry(tmp_path, server, "/bad.zip", None)), check=False)
    assert res.returncode == 1
    assert "ESC-50-master.zip" in res.stderr and ("CRC" in res.stderr or "not a valid zip" in res.stderr)
    assert not (target / "ESC-50-master").exists()


def test_interrupted_transfer_resumes_with_a_range_request(tmp_path, server):
    body = esc50_zip(tmp_path)
    server.files["/cut.zip"] = body
    server.cut_once.add("/cut.zip")
    reg = registry(tmp_path, server, "/cut.zip", hashlib.md5(body).hexdigest())
    target = tmp_path / "data"
    first = cli("data", "download", "esc50", "--to", str(target), "--registry", str(reg), check=False)
    assert first.returncode == 1 and "rerun the same command to resume" in first.stderr
    part = target / ".downloads" / "ESC-50-master.zip.part"
    kept = part.stat().st_size
    assert 0 < kept < len(body)
    second = cli("data", "download", "esc50", "--to", str(target), "--registry", str(reg))
    assert server.ranges == [("/cut.zip", f"bytes={kept}-")]
    assert f"resumed at byte {kept:,}" in second.stdout
    assert "1 file(s) downloaded and verified" in second.stdout
    assert (target / "ESC-50-master" / "meta" / "esc50.csv").is_file()


def test_voxceleb1_says_what_to_do_and_builtin_sources_say_how_they_are_verified():
    from asc_bench.data.download import SOURCES

    res = cli("data", "download", "voxceleb1", "--to", "/nonexistent", check=False)
    assert res.returncode == 1 and "registration" in res.stdout and "data check voxceleb1" in res.stdout
    for name in ("esc50", "tut17", "tau22", "icme24", "nsynth-test", "nsynth-valid", "scv2", "fsdkaggle2018"):
        src = SOURCES[name]
        assert src.files and all(f.url.startswith("http") for f in src.files)
    assert SOURCES["icme24"].files[0].size == 5_271_935_462
    listed = {r["name"]: r for r in json.loads(cli("list", "sources", "--json").stdout)}
    assert listed["voxceleb1"]["files"] == "manual" and listed["nsynth-valid"]["dataset"] == "nsynth"


def test_every_builtin_md5_is_well_formed_and_every_file_without_one_says_why():
    from asc_bench.data.download import NO_MD5, SOURCES

    with_md5 = set()
    for src in SOURCES.values():
        for f in src.files:
            if f.md5 is None:
                # no md5 is invented: the entry says that none is published and how the file is verified instead
                assert any(n.startswith(NO_MD5) for n in src.notes), (src.name, f.name)
            else:
                assert len(f.md5) == 32 and set(f.md5) <= set("0123456789abcdef"), (src.name, f.name, f.md5)
                with_md5.add(src.name)
                # ... and an md5 names where it was copied from: a repository and a file path in it
                assert any("md5" in n and "/" in n and ".py" in n for n in src.notes), src.name
            assert f.size is None or f.size > 0
    assert with_md5 == {"tut17", "tau22", "nsynth-test", "nsynth-valid", "scv2"}
    # the built-in md5s are distinct files: a copy-paste slip would repeat one
    md5s = [f.md5 for s in SOURCES.values() for f in s.files if f.md5]
    assert len(md5s) == len(set(md5s)) == 13 + 18 + 3


def test_a_malformed_md5_in_a_registry_file_is_a_usage_error_naming_the_field(tmp_path):
    reg = tmp_path / "sources.yaml"
    reg.write_text(yaml.safe_dump({"sources": [{"name": "esc50", "dataset": "esc50", "files": [
        {"name": "ESC-50-master.zip", "url": "http://127.0.0.1:1/x.zip", "md5": "md5:1234"}]}]}))
    res = cli("data", "download", "esc50", "--to", str(tmp_path / "d"), "--registry", str(reg), check=False)
    assert res.returncode == 2
    assert "sources[0].files[0]" in res.stderr and "'md5:1234'" in res.stderr and "32 hexadecimal" in res.stderr
    assert not (tmp_path / "d").exists()
    reg.write_text(reg.read_text().replace("md5:1234", "D41D8CD98F00B204E9800998ECF8427E"))   # upper case is fine
    from asc_bench.data.download import load_registry

    assert load_registry(reg)["esc50"].files[0].md5 == "d41d8cd98f00b204e9800998ecf8427e"
