"""Tests of kiln.metrics.Reporter against a real HTTP server on loopback."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import kiln
from kiln.metrics import Reporter

from conftest import PYTHON_DIR, RecordingServer, wait_for


def make_reporter(server: RecordingServer, **kwargs) -> Reporter:
    kwargs.setdefault("flush_interval", 60.0)  # sends happen on threshold or flush()
    return Reporter(server.url, job_id=7, token="tok", **kwargs)


def steps_of(reports):
    return sorted(r["step"] for r in reports)


def assert_no_seq_resent_after_ack(server: RecordingServer) -> None:
    acked: set[tuple[str, int]] = set()
    for request in server.metric_posts():
        body = request.json()
        key = (body["writer"], body["seq"])
        assert key not in acked, f"seq {key} sent again after a 200"
        if request.status == 200:
            acked.add(key)


# ---- validation -------------------------------------------------------------------

@pytest.mark.parametrize("step", [1.0, "1", True, None])
def test_step_must_be_an_int(step):
    with pytest.raises(TypeError, match="step must be an int"):
        Reporter().report(step, {"loss": 1.0})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float32("nan")])
def test_non_finite_values_are_refused_naming_the_metric(value):
    with pytest.raises(ValueError, match="'val_loss'.*finite"):
        Reporter().report(1, {"ok": 1.0, "val_loss": value})


@pytest.mark.parametrize("value", ["0.5", None, [1.0], True])
def test_non_numbers_are_refused_naming_the_metric(value):
    with pytest.raises(TypeError, match="'acc' must be a number"):
        Reporter().report(1, {"acc": value})


@pytest.mark.parametrize("metrics", [{}, {"": 1.0}, {3: 1.0}])
def test_metrics_need_nonempty_string_names(metrics):
    with pytest.raises(ValueError):
        Reporter().report(1, metrics)


def test_metrics_must_be_a_mapping():
    with pytest.raises(TypeError, match="metrics must be a dict"):
        Reporter().report(1, [("loss", 1.0)])


def test_group_must_be_a_nonempty_string():
    with pytest.raises(ValueError, match="group"):
        Reporter().report(1, {"loss": 1.0}, group="")


def test_outside_kiln_report_validates_and_does_nothing():
    reporter = Reporter()
    assert not reporter.enabled
    reporter.report(1, {"loss": 0.5})
    assert reporter.flush(timeout=0) is True
    assert reporter.stats()["points_pending"] == 0
    assert reporter._thread is None
    kiln.report(2, {"loss": 0.4})  # the module-level default is disabled too
    assert kiln.flush(timeout=0) is True


# ---- delivery ------------------------------------------------------------------

def test_sends_the_documented_body_with_the_token(server):
    reporter = make_reporter(server)
    reporter.report(3, {"loss": 0.5, "accuracy": np.float64(0.81)})
    reporter.report(4, {"loss": 0.25}, group="train")
    assert reporter.flush(timeout=10)
    [post] = server.metric_posts()
    assert post.path == "/api/v1/jobs/7/metrics"
    assert post.headers["Authorization"] == "Bearer tok"
    assert post.headers["Content-Type"] == "application/json"
    body = post.json()
    assert set(body) == {"writer", "seq", "reports"}
    assert body["writer"] == reporter.writer and body["seq"] == 1
    first, second = body["reports"]
    assert set(first) == {"step", "group", "time", "metrics"}
    assert (first["step"], first["group"], first["metrics"]) == \
        (3, "test", {"loss": 0.5, "accuracy": 0.81})
    assert (second["step"], second["group"], second["metrics"]) == \
        (4, "train", {"loss": 0.25})
    assert abs(first["time"] - __import__("time").time()) < 60
    reporter.close()


def test_sends_every_interval_without_flush(server):
    reporter = make_reporter(server, flush_interval=0.05)
    reporter.report(1, {"loss": 0.5})
    wait_for(lambda: len(server.stored_reports()) == 1)
    reporter.close()


def test_batches_at_most_1000_points_and_increments_seq(server):
    reporter = make_reporter(server)
    for step in range(2500):
        reporter.report(step, {"loss": 1.0})
    assert reporter.flush(timeout=20)
    posts = server.metric_posts()
    assert [len(p.json()["reports"]) for p in posts] == [1000, 1000, 500]
    assert [p.json()["seq"] for p in posts] == [1, 2, 3]
    assert steps_of(server.stored_reports()) == list(range(2500))
    reporter.close()


def test_a_batch_never_splits_a_report(server):
    reporter = make_reporter(server, max_batch_points=4)
    for step in range(5):
        reporter.report(step, {"a": 1.0, "b": 2.0, "c": 3.0})
    assert reporter.flush(timeout=10)
    assert all(len(p.json()["reports"]) == 1 for p in server.metric_posts())
    assert steps_of(server.stored_reports()) == list(range(5))
    reporter.close()


def test_retries_503_with_the_same_seq_and_loses_nothing(server):
    server.script = [503, 503, 500]
    reporter = make_reporter(server)
    for step in range(10):
        reporter.report(step, {"loss": 1.0})
    assert reporter.flush(timeout=20)
    posts = server.metric_posts()
    assert [(p.status, p.json()["seq"]) for p in posts] == \
        [(503, 1), (503, 1), (500, 1), (200, 1)]
    assert steps_of(server.stored_reports()) == list(range(10))
    assert reporter.stats()["retries"] == 3
    reporter.report(10, {"loss": 1.0})
    assert reporter.flush(timeout=10)
    assert server.metric_posts()[-1].json()["seq"] == 2
    assert_no_seq_resent_after_ack(server)
    reporter.close()


def test_survives_the_server_going_down_and_coming_back(server):
    reporter = make_reporter(server)
    reporter.report(0, {"loss": 1.0})
    assert reporter.flush(timeout=10)
    server.stop()
    for step in range(1, 30):
        reporter.report(step, {"loss": 1.0})
    assert reporter.flush(timeout=0.01) is False
    wait_for(lambda: reporter.stats()["retries"] >= 2)
    assert reporter.stats()["points_pending"] == 29
    server.start()  # same port
    assert reporter.flush(timeout=20)
    assert steps_of(server.stored_reports()) == list(range(30))
    assert [p.json()["seq"] for p in server.metric_posts()] == [1, 2]
    assert_no_seq_resent_after_ack(server)
    reporter.close()


@pytest.mark.parametrize("failure", ["drop", "truncate"])
def test_an_unanswered_batch_is_resent_with_its_seq_and_stored_once(server, failure):
    # The master stores the batch but the answer is lost: the retry must be a no-op.
    server.script = [failure]
    reporter = make_reporter(server)
    for step in range(5):
        reporter.report(step, {"loss": 1.0})
    assert reporter.flush(timeout=20)
    posts = server.metric_posts()
    assert [(p.status, p.json()["seq"]) for p in posts] == [(None, 1), (200, 1)]
    assert steps_of(server.stored_reports()) == list(range(5))
    reporter.close()


def test_4xx_drops_the_batch_says_so_once_and_goes_on(server, capsys):
    server.script = [400, 400]
    reporter = make_reporter(server, max_batch_points=2)
    for step in range(6):
        reporter.report(step, {"loss": 1.0})
    assert reporter.flush(timeout=10)
    posts = server.metric_posts()
    assert [(p.status, p.json()["seq"]) for p in posts] == \
        [(400, 1), (400, 2), (200, 3)]
    assert steps_of(server.stored_reports()) == [4, 5]
    stats = reporter.stats()
    assert stats["points_rejected"] == 4 and stats["retries"] == 0
    assert reporter.last_error.status == 400
    assert reporter.last_error.code == "INVALID_ARGUMENT"
    err = capsys.readouterr().err
    assert err.count("rejected a metrics batch") == 1
    assert "scripted 400" in err
    reporter.close()


def test_full_buffer_drops_oldest_points_with_one_warning(server, capsys):
    server.stop()
    reporter = make_reporter(server, max_batch_points=5, max_buffer_points=10)
    for step in range(40):
        reporter.report(step, {"loss": 1.0})
    server.start()
    assert reporter.flush(timeout=20)
    stored = steps_of(server.stored_reports())
    stats = reporter.stats()
    assert stats["points_dropped"] > 0
    assert len(stored) + stats["points_dropped"] == 40
    assert stored[-10:] == list(range(30, 40))  # the newest are kept
    assert capsys.readouterr().err.count("metrics buffer full") == 1
    reporter.close()


def test_closed_reporter_refuses_reports(server):
    reporter = make_reporter(server)
    reporter.report(1, {"loss": 1.0})
    assert reporter.close(timeout=10)
    assert len(server.stored_reports()) == 1
    with pytest.raises(RuntimeError, match="closed"):
        reporter.report(2, {"loss": 1.0})


def test_writers_are_unique_per_reporter(server):
    a, b = make_reporter(server), make_reporter(server)
    assert a.writer != b.writer
    a.close()
    b.close()


def test_module_level_report_flushes_at_exit_of_a_child_process(server):
    # A script that only calls kiln.report() and exits loses nothing.
    code = ("import kiln\n"
            "for i in range(2500):\n"
            "    kiln.report(i, {'loss': i / 10}, group='train')\n")
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR, KILN_MASTER=server.url,
               KILN_JOB_ID="9", KILN_TOKEN="child-token", KILN_TASK_ID="9.0")
    done = subprocess.run([sys.executable, "-c", code], env=env, timeout=60,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    reports = server.stored_reports()
    assert steps_of(reports) == list(range(2500))
    assert all(r["group"] == "train" for r in reports)
    posts = server.metric_posts()
    assert all(p.path == "/api/v1/jobs/9/metrics" for p in posts)
    assert all(p.headers["Authorization"] == "Bearer child-token" for p in posts)
    assert posts[0].json()["writer"].startswith("py-9.0-")
