"""Tests of kiln.emetrics: WMLA's emetrics lines and val_dict_list.json."""

from __future__ import annotations

import json
import re

import numpy as np

from kiln.emetrics import EMetrics, write_val_dict_list


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_record_writes_the_exact_wmla_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    monkeypatch.setenv("TRAINING_ID", "training-7")
    with EMetrics.open() as em:
        em.record(EMetrics.TEST_GROUP, 1, {"loss": 0.033, "accuracy": 98.89})
    [line] = read_lines(tmp_path / "evaluation-metrics.txt")
    assert set(line) == {"meta", "grouplabel", "etimes", "values"}
    assert set(line["meta"]) == {"training_id", "time", "rindex"}
    assert line["meta"]["training_id"] == "training-7"
    assert line["meta"]["rindex"] == 1
    assert isinstance(line["meta"]["time"], int) and line["meta"]["time"] > 1.5e12
    assert line["grouplabel"] == "test"
    assert set(line["etimes"]) == {"iteration", "time_stamp"}
    assert line["etimes"]["iteration"] == {"type": 2, "value": "1"}
    assert set(line["etimes"]["time_stamp"]) == {"value"}
    # WMLA's strftime("%Y-%m-%dT%H:%M:%S.%s"): the fraction is the Unix time in seconds.
    stamp = line["etimes"]["time_stamp"]["value"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{10}", stamp)
    assert abs(int(stamp.split(".")[1]) - line["meta"]["time"] // 1000) <= 1
    assert line["values"] == {"loss": {"type": 3, "value": "0.033"},
                              "accuracy": {"type": 3, "value": "98.89"}}


def test_values_are_typed_like_wmla(tmp_path, monkeypatch):
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    with EMetrics.open() as em:
        em.record(EMetrics.TRAIN_GROUP, 5, {"f": 0.5, "i": 3, "s": "adam", "b": True,
                                            "np32": np.float32(0.25), "np64": np.int64(4)})
    [line] = read_lines(tmp_path / "evaluation-metrics.txt")
    assert line["grouplabel"] == "train"
    assert line["meta"]["training_id"] == ""
    assert line["values"] == {"f": {"type": 3, "value": "0.5"},
                              "i": {"type": 2, "value": "3"},
                              "s": {"value": "adam"},
                              "b": {"value": "True"},
                              "np32": {"type": 3, "value": "0.25"},
                              "np64": {"type": 2, "value": "4"}}


def test_rindex_counts_records_and_subid_is_in_meta(tmp_path, monkeypatch):
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    monkeypatch.setenv("RESULT_DIR", str(tmp_path / "result"))
    with EMetrics.open("3") as em:
        for i in range(3):
            em.record(EMetrics.TRAIN_GROUP, i, {"loss": 1.0})
    lines = read_lines(tmp_path / "evaluation-metrics.txt")
    assert [l["meta"]["rindex"] for l in lines] == [1, 2, 3]
    assert all(l["meta"]["subid"] == "3" for l in lines)


def test_file_is_appended_across_opens(tmp_path, monkeypatch):
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    for step in (1, 2):
        with EMetrics.open() as em:
            em.record(EMetrics.TEST_GROUP, step, {"loss": 0.1})
    assert len(read_lines(tmp_path / "evaluation-metrics.txt")) == 2


def test_falls_back_to_job_state_dir_logs(tmp_path, monkeypatch):
    monkeypatch.setenv("JOB_STATE_DIR", str(tmp_path))
    with EMetrics.open() as em:
        em.record(EMetrics.TEST_GROUP, 1, {"loss": 0.1})
    assert (tmp_path / "logs" / "evaluation-metrics.txt").exists()


def test_close_with_subid_writes_test_history_to_val_dict_list(tmp_path, monkeypatch):
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "log"))
    monkeypatch.setenv("RESULT_DIR", str(tmp_path / "result"))
    with EMetrics.open("1") as em:
        em.record(EMetrics.TRAIN_GROUP, 10, {"loss": 0.9})
        em.record(EMetrics.TEST_GROUP, 1, {"loss": 0.5, "accuracy": np.float32(0.75)})
        em.record(EMetrics.TEST_GROUP, 2, {"loss": 0.4, "accuracy": 0.8})
    rows = json.loads((tmp_path / "result" / "val_dict_list.json").read_text())
    assert rows == [{"steps": 1, "loss": 0.5, "accuracy": 0.75},
                    {"steps": 2, "loss": 0.4, "accuracy": 0.8}]
    # Still a valid emetrics file next to it, in LOG_DIR itself (not LOG_DIR/subId).
    assert len(read_lines(tmp_path / "log" / "evaluation-metrics.txt")) == 3


def test_close_without_subid_writes_no_val_dict_list(tmp_path, monkeypatch):
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    monkeypatch.setenv("RESULT_DIR", str(tmp_path))
    with EMetrics.open() as em:
        em.record(EMetrics.TEST_GROUP, 1, {"loss": 0.5})
    assert not (tmp_path / "val_dict_list.json").exists()


def test_val_dict_list_can_be_left_to_the_script(tmp_path, monkeypatch):
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    monkeypatch.setenv("RESULT_DIR", str(tmp_path))
    with EMetrics.open("1", write_val_dict_list=False) as em:
        em.record(EMetrics.TEST_GROUP, 1, {"loss": 0.5})
    assert not (tmp_path / "val_dict_list.json").exists()


def test_write_val_dict_list_replaces_the_file(tmp_path):
    write_val_dict_list([{"steps": 1, "loss": 0.5}], str(tmp_path))
    path = write_val_dict_list([{"steps": 1, "loss": 0.5}, {"steps": 2, "loss": 0.4}],
                               str(tmp_path))
    assert json.loads(open(path).read())[-1] == {"steps": 2, "loss": 0.4}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val_dict_list.json"]


def test_top_level_shim_is_the_kiln_class():
    import emetrics
    assert emetrics.EMetrics is EMetrics
    assert (EMetrics.TEST_GROUP, EMetrics.TRAIN_GROUP) == ("test", "train")
