"""Tests of kiln.context: the workload environment and config.json."""

from __future__ import annotations

import json

import pytest

import kiln
from kiln.context import context


def test_config_returns_the_object_in_config_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"lr": 0.01, "hidden": 64}))
    assert kiln.config() == {"lr": 0.01, "hidden": 64}


def test_config_without_a_file_returns_default_or_empty_dict(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert kiln.config() == {}
    default = {"lr": 0.1}
    got = kiln.config(default)
    assert got == default and got is not default


def test_config_does_not_merge_default_into_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text('{"lr": 0.5}')
    assert kiln.config({"epochs": 3}) == {"lr": 0.5}


def test_malformed_config_names_the_file_and_position(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text('{"lr": 0.01,\n "hidden": }')
    with pytest.raises(ValueError) as e:
        kiln.config()
    assert "config.json is not valid JSON" in str(e.value)
    assert "line 2" in str(e.value)


def test_config_that_is_not_an_object_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object.*list"):
        kiln.config()


def test_config_reads_another_path(tmp_path):
    path = tmp_path / "hp.json"
    path.write_text('{"model": "cnn"}')
    assert kiln.config(path=str(path)) == {"model": "cnn"}


def test_context_reads_the_workload_contract(monkeypatch):
    env = {"KILN_MASTER": "http://m:8470", "KILN_TOKEN": "t", "KILN_JOB_ID": "7",
           "KILN_TASK_ID": "7.0", "KILN_TRIAL_ID": "3", "KILN_SLOTS": "4",
           "RESULT_DIR": "/r", "LOG_DIR": "/l", "DATA_DIR": "/d", "CHECKPOINT_DIR": "/c",
           "TRAINING_ID": "training-7", "SUBID": "3"}
    ctx = context(env)
    assert (ctx.master, ctx.token, ctx.job_id, ctx.task_id, ctx.trial_id) == \
        ("http://m:8470", "t", "7", "7.0", "3")
    assert ctx.slots == 4
    assert (ctx.result_dir, ctx.log_dir, ctx.data_dir, ctx.checkpoint_dir) == \
        ("/r", "/l", "/d", "/c")
    assert (ctx.training_id, ctx.subid) == ("training-7", "3")
    assert ctx.in_kiln


def test_context_outside_kiln_is_empty():
    ctx = context({})
    assert ctx == kiln.WorkloadContext()
    assert not ctx.in_kiln
    assert context({"KILN_MASTER": "", "KILN_JOB_ID": ""}).master is None


def test_context_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("KILN_JOB_ID", "12")
    assert context().job_id == "12"


@pytest.mark.parametrize("slots", ["two", "0", "-1"])
def test_bad_kiln_slots_is_an_error(slots):
    with pytest.raises(ValueError, match="KILN_SLOTS"):
        context({"KILN_SLOTS": slots})
