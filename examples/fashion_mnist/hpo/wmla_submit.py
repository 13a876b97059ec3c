#!/usr/bin/python3
"""A Fashion-MNIST hyperparameter search through Kiln's WMLA dialect, written the way IBM's
WMLA HPO notebook (CPD-WMLA-HPO-via-WMLA-RestAPI.ipynb) does it, so the same cells work
against Kiln: log on, tar the code folder as ``<name>.modelDir.tar``, POST it with the
``hpo_input`` to ``/platform/rest/deeplearning/v1/hypersearch``, poll the task until it
is no longer SUBMITTED or RUNNING, and print the best experiment.

Run it against a started Kiln (``kiln up``)::

    export KILN_USER=admin KILN_PASSWORD=...
    /usr/bin/python3 examples/fashion_mnist/hpo/wmla_submit.py --algorithm Tpe

Each experiment runs ``python3 train.py`` (the first python3 on the agent's PATH, which
needs torch) from ``examples/fashion_mnist`` on a subset of the data; it reads its
hyperparameters from ``config.json`` and writes ``$RESULT_DIR/val_dict_list.json``.
Needs Python's ``requests`` (Debian: python3-requests), as the WMLA notebooks do.
"""

import argparse
import json
import os
import sys
import tarfile
import tempfile
import time

try:
    import requests
except ImportError:
    sys.exit("this example uses requests, as WMLA's notebooks do: apt install python3-requests")

CODE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # examples/fashion_mnist


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=os.environ.get("KILN_URL", "http://127.0.0.1:8470"),
                   help="Kiln master (default $KILN_URL or http://127.0.0.1:8470)")
    p.add_argument("--user", default=os.environ.get("KILN_USER", "admin"))
    p.add_argument("--password", default=os.environ.get("KILN_PASSWORD"))
    p.add_argument("--algorithm", default="Random",
                   choices=["Random", "Tpe", "Bayesian", "Hyperband"])
    p.add_argument("--trials", type=int, default=12, help="maxJobNum")
    p.add_argument("--parallel", type=int, default=2, help="maxParalleJobNum")
    p.add_argument("--train-limit", type=int, default=6000,
                   help="training images per experiment (a subset keeps it short)")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between polls")
    return p.parse_args()


def main():
    args = parse_args()
    if not args.password:
        sys.exit("give --password or set KILN_PASSWORD")
    dl_rest_url = args.url.rstrip("/") + "/platform/rest/deeplearning/v1"

    # Log on as on WMLA 2.x: Basic credentials once, then the token as X-Auth-Token.
    r = requests.get(args.url.rstrip("/") + "/auth/v1/logon", auth=(args.user, args.password))
    r.raise_for_status()
    headers = {"Accept": "application/json", "X-Auth-Token": r.json()["accessToken"]}

    # The model: the code folder as a gzip tar with one top-level folder, --model-dir.
    model_dir = os.path.basename(CODE_DIR)
    tmp = tempfile.mkdtemp()
    tar_path = os.path.join(tmp, model_dir + ".modelDir.tar")
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(CODE_DIR, arcname=model_dir,
                filter=lambda info: None if "__pycache__" in info.name else info)

    algo_params = []
    if args.algorithm == "Hyperband":
        # Hyperband hands each experiment its budget of epochs in config.json.
        algo_params = [{"name": "ResourceName", "value": "epochs"},
                       {"name": "ResourceValue", "value": "3"}]
    elif args.algorithm == "Tpe":
        algo_params = [{"name": "WarmUp", "value": "4"}]
    elif args.algorithm == "Bayesian":
        algo_params = [{"name": "InitPoints", "value": "4"}]

    # Arguments dlicmd does not know go to train.py. Its flags override config.json, so
    # Hyperband's epochs (a config.json key) must not be given as a flag too.
    epochs = "" if args.algorithm == "Hyperband" else " --epochs 3"
    hpo_input = {
        "modelSpec": {
            "args": f"--exec-start PyTorch --cs-datastore-meta type=fs --model-main train.py "
                    f"--model-dir {model_dir} --train-limit {args.train_limit} "
                    f"--test-limit 2000{epochs}",
        },
        "algoDef": {
            "algorithm": args.algorithm,
            "maxRunTime": 60,
            "maxJobNum": args.trials,
            "maxParalleJobNum": args.parallel,
            "objectiveMetric": "accuracy",
            "objective": "maximize",
            "additionalMetrics": {"loss": "minimize"},
            "algoParams": algo_params,
        },
        "hyperParams": [
            {"name": "learning_rate", "type": "Range", "dataType": "DOUBLE",
             "minDbVal": -3, "maxDbVal": -0.5, "power": "10"},
            {"name": "momentum", "type": "Range", "dataType": "DOUBLE",
             "minDbVal": 0.5, "maxDbVal": 0.99},
            {"name": "hidden", "type": "Discrete", "dataType": "INT",
             "discreteIntVal": [64, 128, 256]},
            {"name": "batch_size", "type": "Discrete", "dataType": "INT",
             "discreteIntVal": [32, 64, 128]},
        ],
    }

    with open(tar_path, "rb") as f:
        r = requests.post(dl_rest_url + "/hypersearch", headers=headers,
                          files={"file": f}, data={"data": json.dumps(hpo_input)})
    if not r.ok:
        sys.exit(f"submit failed: HTTP {r.status_code}: {r.text}")
    hpo_name = r.json()["uid"]
    print(f"submitted {hpo_name}")

    # Poll as the notebook does.
    while True:
        task = requests.get(f"{dl_rest_url}/hypersearch/{hpo_name}", headers=headers).json()
        print(f"{time.strftime('%H:%M:%S')} {task['state']:<9} progress {task['progress']}  "
              f"running {task['running']}  complete {task['complete']}  "
              f"failed {task['failed']}", flush=True)
        if task["state"] not in ("SUBMITTED", "RUNNING"):
            break
        time.sleep(args.poll)

    for e in task["experiments"]:
        params = ", ".join(f"{h['name']}={h['fixedVal']}" for h in e["hyperParams"])
        print(f"  experiment {e['id']:>2} {e['state']:<9} accuracy {e['metricVal']:<10.4g} "
              f"exec {e['appId']}: {params}")
    best = task.get("best")
    if not best:
        sys.exit(f"no best experiment: the task ended {task['state']} "
                 f"({task.get('reason', 'no reason given')})")
    print(f"best: experiment {best['id']} accuracy {best['metricVal']:.4f} with "
          + ", ".join(f"{h['name']}={h['fixedVal']}" for h in best["hyperParams"]))
    print(f"its log: GET {dl_rest_url}/execs/{best['appId']}/log")


if __name__ == "__main__":
    main()
