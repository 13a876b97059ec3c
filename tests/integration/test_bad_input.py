"""Bad input gets a clear 4xx that says what is wrong, and never takes the master down
or changes what is stored."""

import base64
import json

import pytest


def error(resp):
    status, body = resp
    assert isinstance(body, dict) and "error" in body, body
    return status, body["error"]["code"], body["error"]["message"]


@pytest.mark.parametrize("body, code, needle", [
    (b"{\"command\": ", "INVALID_ARGUMENT", "malformed JSON"),
    (b"[1, 2]", "INVALID_ARGUMENT", "JSON object"),
    (b"{}", "INVALID_ARGUMENT", "\"command\" must be a non-empty list"),
    (b"{\"command\": \"python3 train.py\"}", "INVALID_ARGUMENT", "\"command\" must be a list of strings"),
    (b"{\"command\": [\"true\"], \"resources\": {\"slots\": \"two\"}}", "INVALID_ARGUMENT", "\"slots\" must be an integer"),
    (b"{\"command\": [\"true\"], \"resources\": {\"slots\": 0}}", "INVALID_ARGUMENT", "resources.slots must be between 1"),
    (b"{\"command\": [\"true\"], \"env\": {\"KILN_TOKEN\": \"x\"}}", "INVALID_ARGUMENT", "reserved"),
    (b"{\"command\": [\"true\"], \"package\": {\"path\": \"relative/dir\"}}", "INVALID_ARGUMENT", "must be absolute"),
    (b"{\"command\": [\"true\"], \"package\": {\"id\": \"sha256-0000\"}}", "NOT_FOUND", "upload it"),
    (b"{\"command\": [\"true\"], \"comand\": 1}", "INVALID_ARGUMENT", "unknown field \"comand\""),
])
def test_bad_job_requests_get_a_4xx_naming_the_problem(client, body, code, needle):
    status, got_code, message = error(client.raw("POST", "/api/v1/jobs", body=body,
                                                 headers={"Content-Type": "application/json"}))
    assert 400 <= status < 500
    assert got_code == code
    assert needle in message


def test_a_request_no_agent_could_ever_run_is_refused(client):
    status, code, message = error(client.raw(
        "POST", "/api/v1/jobs", body=json.dumps({"command": ["true"], "resources": {"gpus": 1}}).encode()))
    assert status == 409 and code == "FAILED_PRECONDITION"
    assert "largest agent has 2 slots and 0 GPUs" in message


def test_an_oversized_body_is_refused_before_it_is_read(master, client):
    import socket
    auth = client._headers["Authorization"]
    with socket.create_connection(("127.0.0.1", master.port), timeout=10) as s:
        # Only the header: the master must answer without waiting for 17 MiB.
        s.sendall(f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                  f"Content-Length: {17 << 20}\r\n\r\n".encode())
        reply = s.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 413")
    assert "larger than the limit" in reply


def test_unknown_and_malformed_job_ids(client):
    assert error(client.raw("GET", "/api/v1/jobs/424242"))[:2] == (404, "NOT_FOUND")
    status, code, message = error(client.raw("GET", "/api/v1/jobs/abc"))
    assert status == 400 and "not a job id" in message
    status, code, message = error(client.raw("POST", "/api/v1/jobs/424242/kill"))
    assert status == 404


def test_requests_without_valid_credentials_are_401(client):
    status, code, message = error(client.raw("GET", "/api/v1/jobs", auth=False))
    assert status == 401 and "credentials" in message
    bad = base64.b64encode(b"admin:wrong").decode()
    status, code, message = error(client.raw("GET", "/api/v1/jobs", auth=False,
                                             headers={"Authorization": f"Basic {bad}"}))
    assert status == 401 and "wrong user name or password" in message
    status, code, _ = error(client.raw("GET", "/api/v1/jobs", auth=False,
                                       headers={"Authorization": "Bearer not-a-token"}))
    assert status == 401


def test_users_see_only_their_own_jobs(master, client):
    status, _ = client.raw("POST", "/api/v1/users",
                           body=json.dumps({"username": "ada", "password": "ada-password"}).encode())
    assert status == 201
    ada = master.client("ada", "ada-password")
    mine = ada.submit(["true"])
    theirs = client.submit(["true"])
    assert [j["id"] for j in ada.jobs()] == [mine["id"]]
    assert error(ada.raw("GET", f"/api/v1/jobs/{theirs['id']}"))[0] == 404
    assert error(ada.raw("POST", f"/api/v1/jobs/{theirs['id']}/kill"))[0] == 404
    assert client.job(mine["id"])["user"] == "ada"  # admins see everyone's
    assert error(ada.raw("GET", "/api/v1/users"))[0] == 403


def test_token_login_and_logout(master, client):
    status, body = client.raw("POST", "/api/v1/auth/login", auth=False,
                              body=json.dumps({"username": "admin", "password": "integration-pass"}).encode())
    assert status == 200
    token = body["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.raw("GET", "/api/v1/me", auth=False, headers=headers) == (200, {"user": "admin", "admin": True})
    # WMLA 2.x style header.
    assert client.raw("GET", "/api/v1/me", auth=False, headers={"X-Auth-Token": token})[0] == 200
    assert client.raw("POST", "/api/v1/auth/logout", auth=False, headers=headers)[0] == 200
    assert client.raw("GET", "/api/v1/me", auth=False, headers=headers)[0] == 401


def test_a_task_token_reaches_only_its_own_job(client, tmp_path):
    from conftest import wait_for
    code = tmp_path / "c"
    code.mkdir()
    (code / "t.sh").write_text("echo $KILN_TOKEN; sleep 60\n")
    job = client.submit(["sh", "t.sh"], package=str(code))
    other = client.submit(["true"])
    token = wait_for(lambda: client.all_logs(job["id"]), what="the token")[0]["text"]
    assert len(token) == 64
    headers = {"Authorization": f"Bearer {token}"}
    assert client.raw("GET", f"/api/v1/jobs/{job['id']}", auth=False, headers=headers)[0] == 200
    assert client.raw("GET", f"/api/v1/jobs/{other['id']}", auth=False, headers=headers)[0] == 404
    assert client.raw("GET", "/api/v1/jobs", auth=False, headers=headers)[0] == 403
    assert client.raw("POST", "/api/v1/jobs", auth=False, headers=headers,
                      body=b'{"command": ["true"]}')[0] == 403
    assert client.raw("GET", "/api/v1/agents", auth=False, headers=headers)[0] == 403
    package = client.job(job["id"])["package"]["id"]
    assert client.raw("GET", f"/api/v1/packages/{package}/content", auth=False,
                      headers=headers)[0] == 403
    client.kill(job["id"])
    client.wait_state(job["id"], "KILLED")
    # Revoked when the job ends.
    assert client.raw("GET", f"/api/v1/jobs/{job['id']}", auth=False, headers=headers)[0] == 401


def test_bad_metric_reports_are_refused_and_store_nothing(client):
    job = client.submit(["true"])
    client.wait_state(job["id"], "FINISHED")
    path = f"/api/v1/jobs/{job['id']}/metrics"
    for body, needle in [
        ({"writer": "w", "seq": 1, "reports": [{"step": 1, "metrics": {"loss": "high"}}]}, "must be a number"),
        ({"writer": "w", "seq": 0, "reports": []}, "positive"),
        ({"seq": 1, "reports": []}, "\"writer\""),
        ({"writer": "w", "seq": 1, "reports": [{"metrics": {"a": 1}}]}, "\"step\""),
    ]:
        status, code, message = error(client.raw("POST", path, body=json.dumps(body).encode()))
        assert status == 400 and needle in message, message
    status, body = client.raw("POST", path, body=b'{"writer":"w","seq":1,"reports":[{"step":1,"metrics":{"a":NaN}}]}')
    assert status == 400
    assert client.metrics(job["id"]) == []


def test_the_master_survives_garbage_on_the_wire(master, client):
    import socket
    for junk in [b"\x00\x01\x02 garbage\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                 b"POST /api/v1/jobs HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]:
        with socket.create_connection(("127.0.0.1", master.port), timeout=5) as s:
            s.sendall(junk)
            try:
                s.recv(4096)
            except OSError:
                pass
    assert client.raw("GET", "/api/v1/health", auth=False)[0] == 200
