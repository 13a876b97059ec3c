"""Tests of kiln.client.Client's own logic: error mapping, packing, requests it sends,
and log following across a dropped stream. The master itself is exercised by the
integration tests in tests/integration/."""

from __future__ import annotations

import base64
import io
import json
import socket
import tarfile
import gzip
from urllib.parse import parse_qs, urlparse

import pytest

from kiln import Client, KilnError
from kiln.client import _pack_folder
from kiln.errors import error_from_http


def test_error_body_becomes_kiln_error_fields():
    e = error_from_http(400, b'{"error": {"code": "INVALID_ARGUMENT", '
                             b'"message": "field \\"slots\\" must be an integer"}}')
    assert (e.status, e.code, e.message) == (400, "INVALID_ARGUMENT",
                                              'field "slots" must be an integer')
    assert str(e) == '400 INVALID_ARGUMENT: field "slots" must be an integer'


def test_non_kiln_error_body_still_gives_a_message():
    e = error_from_http(502, b"<html>Bad Gateway</html>", "Bad Gateway")
    assert (e.status, e.code) == (502, None)
    assert "Bad Gateway" in e.message
    assert error_from_http(503, b"", "Service Unavailable").message == \
        "Service Unavailable"


def test_http_error_from_the_server_raises_kiln_error(server):
    client = Client(server.url, user="ann", password="pw")
    with pytest.raises(KilnError) as e:
        client.job(42)
    assert (e.value.status, e.value.code) == (404, "NOT_FOUND")
    [request] = server.requests
    assert request.path == "/api/v1/jobs/42"
    assert request.headers["Authorization"] == \
        "Basic " + base64.b64encode(b"ann:pw").decode()


def test_unreachable_master_raises_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(KilnError) as e:
        Client(f"http://127.0.0.1:{port}", token="t").jobs()
    assert e.value.status is None and e.value.code == "UNAVAILABLE"
    assert "cannot reach" in e.value.message


def test_defaults_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("KILN_URL", "http://kiln.example:8470/")
    monkeypatch.setenv("KILN_TOKEN", "tok")
    client = Client()
    assert client.url == "http://kiln.example:8470"
    assert client._headers["Authorization"] == "Bearer tok"


def test_pack_folder_is_reproducible_and_skips_vcs_and_caches(tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "util.py").write_text("X = 1\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref\n")
    (tmp_path / "lib" / "__pycache__").mkdir()
    (tmp_path / "lib" / "__pycache__" / "util.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "link.py").symlink_to(tmp_path / "train.py")
    data = _pack_folder(str(tmp_path))
    assert data == _pack_folder(str(tmp_path))
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["lib", "lib/util.py", "link.py", "train.py"]
        assert all(not m.issym() and not m.islnk() for m in members.values())
        assert tar.extractfile("link.py").read() == b"print('hi')\n"


def test_submit_uploads_the_package_then_posts_the_job(server, tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    server.canned["/api/v1/packages"] = (201, {"id": "sha256-ab", "kind": "tar.gz"})
    server.canned["/api/v1/jobs"] = (201, {"id": 7, "state": "QUEUED"})
    client = Client(server.url, token="t")
    job = client.submit("python3 train.py --epochs '2'", package=tmp_path, slots=2,
                        env={"A": 1}, config={"lr": 0.1}, name="fm")
    assert job == {"id": 7, "state": "QUEUED"}
    upload, post = server.requests
    assert urlparse(upload.path).path == "/api/v1/packages"
    assert parse_qs(urlparse(upload.path).query)["name"] == [tmp_path.name + ".tar.gz"]
    assert upload.headers["Content-Type"] == "application/gzip"
    assert upload.body == _pack_folder(str(tmp_path))
    assert post.json() == {"command": ["python3", "train.py", "--epochs", "2"],
                           "resources": {"slots": 2, "gpus": 0}, "name": "fm",
                           "env": {"A": "1"}, "config": {"lr": 0.1},
                           "package": {"id": "sha256-ab"}}


def test_submit_a_single_file_package(server, tmp_path):
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    server.canned["/api/v1/packages"] = (201, {"id": "sha256-cd", "kind": "file"})
    server.canned["/api/v1/jobs"] = (201, {"id": 8})
    Client(server.url).submit(["python3", "train.py"], package=str(script))
    upload = server.requests[0]
    assert parse_qs(urlparse(upload.path).query)["name"] == ["train.py"]
    assert upload.headers["Content-Type"] == "application/octet-stream"
    assert upload.body == b"print('hi')\n"


def test_jobs_follows_pages_up_to_the_limit(server):
    pages = {None: {"jobs": [{"id": 3}, {"id": 2}], "next_page_token": "p2"},
             "p2": {"jobs": [{"id": 1}]}}

    def handler(h):
        query = parse_qs(urlparse(h.path).query)
        assert query["state"] == ["RUNNING", "QUEUED"]
        reply = json.dumps(pages[query.get("page_token", [None])[0]]).encode()
        h.send_response(200)
        h.send_header("Content-Length", str(len(reply)))
        h.end_headers()
        h.wfile.write(reply)

    server.handlers["/api/v1/jobs"] = handler
    client = Client(server.url)
    assert [j["id"] for j in client.jobs(state=["RUNNING", "QUEUED"])] == [3, 2, 1]
    assert [j["id"] for j in client.jobs(state=["RUNNING", "QUEUED"], limit=2)] == [3, 2]


def _line(seq: int) -> bytes:
    return json.dumps({"seq": seq, "time": "t", "stream": "stdout",
                       "text": f"line {seq}"}).encode() + b"\n"


def test_follow_resumes_after_a_dropped_stream_without_repeats(server):
    def handler(h):
        query = parse_qs(urlparse(h.path).query)
        after = int(query.get("after", ["0"])[0])
        if "follow" not in query:
            reply = json.dumps({"lines": [], "next": after, "done": True}).encode()
            h.send_response(200)
            h.send_header("Content-Length", str(len(reply)))
            h.end_headers()
            h.wfile.write(reply)
            return
        h.send_response(200)
        h.send_header("Content-Type", "application/x-ndjson")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        if after == 0:
            for seq in (1, 2):
                h.wfile.write(b"%x\r\n%s\r\n" % (len(_line(seq)), _line(seq)))
            h.wfile.write(b"400\r\n{\"seq\": 3, \"te")  # the master dies mid-chunk
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        for seq in (2, 3, 4):  # a resend of 2 must be skipped
            h.wfile.write(b"%x\r\n%s\r\n" % (len(_line(seq)), _line(seq)))
        h.wfile.write(b"0\r\n\r\n")

    server.handlers["/api/v1/jobs/5/logs"] = handler
    lines = list(Client(server.url).logs(5, follow=True))
    assert [l["seq"] for l in lines] == [1, 2, 3, 4]
    follows = [r.path for r in server.requests if "follow" in r.path]
    assert len(follows) == 2 and "after=2" in follows[1]


def test_logs_without_follow_reads_pages_until_done(server):
    def handler(h):
        after = int(parse_qs(urlparse(h.path).query).get("after", ["0"])[0])
        page = ({"lines": [json.loads(_line(1)), json.loads(_line(2))], "next": 2,
                 "done": False} if after == 0 else
                {"lines": [json.loads(_line(3))], "next": 3, "done": True})
        reply = json.dumps(page).encode()
        h.send_response(200)
        h.send_header("Content-Length", str(len(reply)))
        h.end_headers()
        h.wfile.write(reply)

    server.handlers["/api/v1/jobs/5/logs"] = handler
    assert [l["text"] for l in Client(server.url).logs(5)] == \
        ["line 1", "line 2", "line 3"]


def test_wait_polls_until_a_terminal_state(server):
    states = iter(["QUEUED", "RUNNING", "FINISHED"])

    def handler(h):
        reply = json.dumps({"id": 5, "state": next(states)}).encode()
        h.send_response(200)
        h.send_header("Content-Length", str(len(reply)))
        h.end_headers()
        h.wfile.write(reply)

    server.handlers["/api/v1/jobs/5"] = handler
    assert Client(server.url).wait(5, poll=0.01)["state"] == "FINISHED"


def test_wait_times_out(server):
    server.canned["/api/v1/jobs/5"] = (200, {"id": 5, "state": "RUNNING"})
    with pytest.raises(TimeoutError, match="still RUNNING"):
        Client(server.url).wait(5, poll=0.01, timeout=0.05)
