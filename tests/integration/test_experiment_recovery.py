"""A hyperparameter search survives its master: kilnd killed with SIGKILL mid-search and
started again loses no finished trial, runs no trial twice, and finishes the search."""

import textwrap

from conftest import PYTHON, Master, wait_for

# A trial: reads its x from config.json, takes a moment, reports (x - 3)^2.
TRIAL = textwrap.dedent("""
    import json, os, time
    x = json.load(open("config.json"))["x"]
    time.sleep(0.6)
    with open(os.path.join(os.environ["RESULT_DIR"], "val_dict_list.json"), "w") as f:
        json.dump([{"steps": 1, "loss": (x - 3) ** 2}], f)
""")

TRIALS = 8


def test_master_killed_mid_search_loses_and_repeats_nothing(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "trial.py").write_text(TRIAL)
    master = Master(tmp_path / "master").start()
    try:
        client = master.client()
        exp = client.create_experiment({
            "name": "survivor",
            "command": [PYTHON, "trial.py"],
            "package": {"path": str(code)},
            "search_space": {"x": {"type": "double", "low": 0, "high": 6}},
            "algorithm": "tpe",
            "objective": {"metric": "loss", "goal": "minimize"},
            "max_trials": TRIALS,
            "parallelism": 2,
            "seed": 7,
        })

        def completed():
            return [t for t in client.trials(exp["id"]) if t["state"] == "COMPLETE"]

        wait_for(lambda: len(completed()) >= 3, timeout=60, what="3 complete trials")
        before = {t["number"]: (t["config"], t["value"], t["job_id"]) for t in completed()}

        master.kill9()
        master.start()
        client = master.client()

        done = client.wait_experiment(exp["id"], timeout=120)
        assert done["state"] == "FINISHED", done
        trials = client.trials(exp["id"])
        assert sorted(t["number"] for t in trials) == list(range(TRIALS))
        assert all(t["state"] == "COMPLETE" for t in trials), trials
        after = {t["number"]: (t["config"], t["value"], t["job_id"]) for t in trials}
        for number, record in before.items():
            assert after[number] == record, f"trial {number} changed across the restart"
        # One job per trial: none was lost and resubmitted, none ran twice.
        jobs = [j for j in client.jobs(limit=200) if j["name"].startswith("survivor-trial-")]
        assert len(jobs) == TRIALS, [j["name"] for j in jobs]
        assert sorted(t["job_id"] for t in trials) == sorted(j["id"] for j in jobs)
        best = min(trials, key=lambda t: t["value"])
        assert client.best(exp["id"])["value"] == best["value"]
    finally:
        master.stop()
