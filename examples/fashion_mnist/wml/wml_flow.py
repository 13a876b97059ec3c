#!/usr/bin/env python3
"""The Watson ML v4 notebook flow (shared/reference/wmla-api.md §3.5) against Kiln.

Every call is the REST call IBM's CPD 3.5 notebooks make (``?version=2020-08-01``,
``Authorization: Bearer``): token -> space -> model definition (+ its code as a ZIP) ->
training -> poll -> model import request -> store the model -> deploy -> score -> clean up. Only the standard
library: run it with any python3.

    python3 wml_flow.py --url http://127.0.0.1:8470 --user admin --password ...

The training is ``examples/fashion_mnist/train.py``, zipped as WML users zip their code;
kept small by default (one epoch over 2,000 images) so the whole flow takes seconds.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import os
import struct
import sys
import time
import urllib.error
import urllib.request
import zipfile
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN_PY = os.path.join(HERE, "..", "train.py")
DATA_DIR = "/usr/share/datasets/fashion-mnist"
VERSION = "2020-08-01"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot"]


class Conflict(SystemExit):
    """HTTP 409: the object is still in use."""


class Wml:
    """The few REST calls of the flow, answering parsed JSON; raises on an HTTP error."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.token: Optional[str] = None

    def call(self, method: str, path: str, body: Any = None, raw: Optional[bytes] = None,
             headers: Optional[dict] = None) -> Any:
        sep = "&" if "?" in path else "?"
        req = urllib.request.Request(f"{self.url}{path}{sep}version={VERSION}", method=method)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        elif raw is not None:
            data = raw
            req.add_header("Content-Type", "application/octet-stream")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, data=data, timeout=60) as resp:
                text = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            if e.code == 409:
                raise Conflict(f"{method} {path}: HTTP 409: {detail}") from None
            raise SystemExit(f"{method} {path}: HTTP {e.code}: {detail}") from None
        return json.loads(text) if text else None


def code_zip() -> bytes:
    """train.py in a ZIP, as WML model definitions carry their code."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(TRAIN_PY, "train.py")
    return buf.getvalue()


def test_images(data_dir: str, count: int) -> tuple[list, list]:
    """The first `count` test images as [1][28][28] lists of floats in [0, 1], and labels."""
    def read(name: str) -> bytes:
        for candidate in (name, name + ".gz"):
            path = os.path.join(data_dir, candidate)
            if os.path.exists(path):
                opener = gzip.open if path.endswith(".gz") else open
                with opener(path, "rb") as f:
                    return f.read()
        raise SystemExit(f"{name} not found in {data_dir}")
    images = read("t10k-images-idx3-ubyte")
    labels = read("t10k-labels-idx1-ubyte")
    _, n, rows, cols = struct.unpack(">IIII", images[:16])
    out = []
    for i in range(min(count, n)):
        px = images[16 + i * rows * cols: 16 + (i + 1) * rows * cols]
        out.append([[[px[r * cols + c] / 255.0 for c in range(cols)] for r in range(rows)]])
    return out, list(labels[8:8 + len(out)])


def wait(what: str, poll, done, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while True:
        value = poll()
        state = done(value)
        if state != last:
            print(f"  {what}: {state}")
            last = state
        if state in ("completed", "ready", "failed", "canceled"):
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} still {state} after {timeout} s")
        time.sleep(0.5)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("KILN_URL", "http://127.0.0.1:8470"))
    p.add_argument("--user", default=os.environ.get("KILN_USER", "admin"))
    p.add_argument("--password", default=os.environ.get("KILN_PASSWORD", ""))
    p.add_argument("--data-dir", default=DATA_DIR, help="the Fashion-MNIST IDX files")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--train-limit", type=int, default=2000)
    p.add_argument("--test-limit", type=int, default=1000)
    p.add_argument("--score", type=int, default=2, help="test images to score")
    p.add_argument("--keep", action="store_true", help="leave everything in place at the end")
    args = p.parse_args(argv)
    wml = Wml(args.url)

    # 1. Token (CPD: GET /v1/preauth/validateAuth with Basic).
    basic = base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
    auth = wml.call("GET", "/v1/preauth/validateAuth", headers={"Authorization": f"Basic {basic}"})
    wml.token = auth["accessToken"]
    print(f"1. token for {auth['username']}: {wml.token[:8]}...")

    # 2. Space.
    space = wml.call("POST", "/v2/spaces", {"name": "kiln_wml_demo"})
    space_id = space["metadata"]["id"]
    state = wml.call("GET", f"/v2/spaces/{space_id}")["entity"]["status"]["state"]
    print(f"2. space {space_id}: {state}")

    # 3-4. Model definition and its code.
    command = (f"train.py --epochs {args.epochs} --train-limit {args.train_limit} "
               f"--test-limit {args.test_limit}")
    definition = wml.call("POST", "/ml/v4/model_definitions", {
        "name": "fashion-mnist mlp", "space_id": space_id, "description": "Kiln WML demo",
        "tags": ["DL", "PyTorch"], "version": "v1",
        "platform": {"name": "python", "versions": ["3.11"]}, "command": command})
    definition_id = definition["metadata"]["id"]
    attached = wml.call("PUT", f"/ml/v4/model_definitions/{definition_id}/model?space_id={space_id}",
                        raw=code_zip())
    print(f"3. model definition {definition_id}, command {command!r}")
    print(f"4. code attached: {attached}")

    # 5. Training.
    training = wml.call("POST", "/ml/v4/trainings", {
        "training_data_references": [{"name": "training_input_data", "type": "fs",
                                      "connection": {}, "location": {"path": args.data_dir}}],
        "results_reference": {"name": "results", "connection": {}, "type": "fs",
                              "location": {"path": f"spaces/{space_id}/assets/experiment"}},
        "name": "fashion-mnist training", "description": "one small epoch",
        "model_definition": {"id": definition_id, "hardware_spec": {"name": "S", "nodes": 1},
                             "software_spec": {"name": "pytorch-onnx_1.3-py3.7"},
                             "parameters": {"name": "p", "description": "demo"}},
        "space_id": space_id})
    training_id = training["metadata"]["id"]
    print(f"5. training {training_id}")

    # 6. Poll.
    details = wait(f"training {training_id}",
                   lambda: wml.call("GET", f"/ml/v4/trainings/{training_id}?space_id={space_id}"),
                   lambda t: t["entity"]["status"]["state"], timeout=600)
    status = details["entity"]["status"]
    print(f"6. training {status['state']}: {status['message']['text']}")
    for m in status.get("metrics", []):
        print(f"   iteration {m['iteration']}: {json.dumps(m['ml_metrics'], sort_keys=True)}")
    if status["state"] != "completed":
        return 1

    # 7. The model import request written for the completed training.
    request = wml.call("GET", f"/v2/asset_files/experiment/{training_id}/assets/{training_id}"
                              f"/resources/wml_model/request.json?space_id={space_id}")
    print(f"7. model import request: {request['content_location']['contents'][0]['location']}")

    # 8. Store the model: that request, as it came.
    model = wml.call("POST", f"/ml/v4/models?space_id={space_id}", request)
    model_id = model["metadata"]["id"]
    print(f"8. model {model_id}: content_import_state "
          f"{model['entity']['content_import_state']} "
          f"(Kiln model {model['entity']['kiln']['model']} v{model['entity']['kiln']['version']})")

    # 9. Deploy and wait until it is ready.
    deployment = wml.call("POST", "/ml/v4/deployments", {
        "space_id": space_id, "name": "fashion-mnist deployment", "description": "demo",
        "online": {}, "hardware_spec": {"name": "S"}, "asset": {"id": model_id}})
    deployment_id = deployment["metadata"]["id"]
    print(f"9. deployment {deployment_id}: {deployment['entity']['status']['state']}")
    deployed = wait(f"deployment {deployment_id}",
                    lambda: wml.call("GET", f"/ml/v4/deployments/{deployment_id}?space_id={space_id}"),
                    lambda d: d["entity"]["status"]["state"], timeout=300)
    if deployed["entity"]["status"]["state"] != "ready":
        print(json.dumps(deployed["entity"]["status"], indent=1))
        return 1
    print(f"   online_url: {deployed['entity']['status']['online_url']['url']}")

    # 10. Score.
    images, labels = test_images(args.data_dir, args.score)
    scored = wml.call("POST", f"/ml/v4/deployments/{deployment_id}/predictions",
                      {"space_id": space_id, "input_data": [{"values": images}]})
    rows = scored["predictions"][0]["values"]
    right = 0
    for row, label in zip(rows, labels):
        guess = max(range(len(row)), key=lambda k: row[k])
        right += guess == label
        print(f"10. predicted {CLASSES[guess]!r} (log-prob {row[guess]:.3f}), "
              f"label {CLASSES[label]!r}")
    print(f"    {right}/{len(labels)} right")

    # 11. Clean up.
    if not args.keep:
        wml.call("DELETE", f"/ml/v4/deployments/{deployment_id}?space_id={space_id}")
        # The deployment's replicas drain first; until they have ended the model version
        # is still served, and deleting it answers 409 naming the deployment.
        deadline = time.monotonic() + 60
        while True:
            try:
                wml.call("DELETE", f"/ml/v4/models/{model_id}?space_id={space_id}")
                break
            except Conflict:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        wml.call("DELETE", f"/ml/v4/model_definitions/{definition_id}?space_id={space_id}")
        wml.call("DELETE", f"/v2/spaces/{space_id}")
        print("11. deleted the deployment, model, model definition and space")
    return 0


if __name__ == "__main__":
    sys.exit(main())
