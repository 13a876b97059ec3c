"""Tests of kiln.Client's distributed-job calls: the worker fields `submit` sends (and the
bad combinations it refuses before uploading anything), `scale`, `tasks` and
`generations`. Against a real loopback HTTP server; the master's side of these routes is
exercised by tests/integration/test_elastic_cli.py."""

from __future__ import annotations

import pytest

from kiln import Client, KilnError

ELASTIC_RECORD = {
    "id": 7, "state": "RUNNING",
    "workers": {"min": 1, "max": 4, "target": 2, "live": 2},
    "tasks": [{"id": 8, "state": "RUNNING", "agent": "host-a", "exit_code": None,
               "reason": ""},
              {"id": 9, "state": "RUNNING", "agent": "host-b", "exit_code": None,
               "reason": ""}],
    "generations": [{"id": 1, "world_size": 1, "members": [8],
                     "started_at": "2026-11-26T10:00:03.000000Z", "reason": "job started"},
                    {"id": 2, "world_size": 2, "members": [8, 9],
                     "started_at": "2026-11-26T10:00:20.000000Z",
                     "reason": "task 9 joined"}],
}


def test_submit_static_workers_sends_a_worker_count(server):
    server.canned["/api/v1/jobs"] = (201, {"id": 7, "state": "QUEUED"})
    Client(server.url).submit(["python3", "ddp.py"], workers=2, slots=2)
    [post] = server.requests
    assert post.json() == {"command": ["python3", "ddp.py"],
                           "resources": {"slots": 2, "gpus": 0}, "workers": 2}


def test_submit_elastic_sends_min_max_and_the_options_given(server):
    server.canned["/api/v1/jobs"] = (201, {"id": 7, "state": "QUEUED"})
    client = Client(server.url)
    client.submit("python3 train.py", min_workers=1, max_workers=4)
    client.submit("python3 train.py", min_workers=2, max_workers=2,
                  min_workers_timeout_s=30, max_worker_failures=0)
    first, second = server.requests
    assert first.json() == {"command": ["python3", "train.py"],
                            "resources": {"slots": 1, "gpus": 0},
                            "min_workers": 1, "max_workers": 4}
    assert second.json()["min_workers_timeout_s"] == 30
    assert second.json()["max_worker_failures"] == 0
    assert (second.json()["min_workers"], second.json()["max_workers"]) == (2, 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"workers": 2, "min_workers": 1, "max_workers": 2}, "not both"),
    ({"min_workers": 1}, "both min_workers and max_workers"),
    ({"max_workers": 3}, "both min_workers and max_workers"),
    ({"min_workers": 3, "max_workers": 1}, r"min_workers \(3\) must not exceed"),
    ({"min_workers": 0, "max_workers": 2}, "min_workers must be a whole number"),
    ({"workers": 0}, "workers must be a whole number of at least 1"),
    ({"workers": "2"}, "workers must be a whole number"),
    ({"workers": 2, "min_workers_timeout_s": 60}, "apply only to elastic jobs"),
    ({"max_worker_failures": 1}, "apply only to elastic jobs"),
])
def test_submit_refuses_bad_worker_arguments_before_uploading(server, tmp_path, kwargs,
                                                              message):
    (tmp_path / "train.py").write_text("print('hi')\n")
    with pytest.raises(ValueError, match=message):
        Client(server.url).submit("python3 train.py", package=tmp_path, **kwargs)
    assert server.requests == []


def test_scale_posts_the_target_and_returns_the_record(server):
    server.canned["/api/v1/jobs/7/scale"] = (200, ELASTIC_RECORD)
    job = Client(server.url, token="t").scale(7, 2)
    assert job["workers"]["target"] == 2
    [post] = server.requests
    assert (post.method, post.path) == ("POST", "/api/v1/jobs/7/scale")
    assert post.json() == {"workers": 2}
    assert post.headers["Authorization"] == "Bearer t"


def test_scale_out_of_range_raises_the_masters_error(server):
    server.script.append(400)
    with pytest.raises(KilnError) as e:
        Client(server.url).scale(7, 9)
    assert (e.value.status, e.value.code) == (400, "INVALID_ARGUMENT")


def test_tasks_and_generations_come_from_the_job_record(server):
    server.canned["/api/v1/jobs/7"] = (200, ELASTIC_RECORD)
    server.canned["/api/v1/jobs/6"] = (200, {"id": 6, "state": "FINISHED"})
    client = Client(server.url)
    assert [t["id"] for t in client.tasks(7)] == [8, 9]
    assert [(g["id"], g["world_size"], g["members"]) for g in client.generations(7)] == \
        [(1, 1, [8]), (2, 2, [8, 9])]
    assert client.generations(6) == []
    assert client.tasks(6) == []
