"""The Python side of the anchors: one TorchScript model answering Watson ML v4 payloads.

Both anchor servers (flask_server.py and gunicorn_app.py) call `WatsonMlScorer.score` on the
raw request body, so they differ only in the HTTP server around it: what Kiln's kiln-serve
is compared with is the conventional way, a Python web server calling torch per request.

Request:  {"input_data":[{"fields":[...]?, "values":[sample, ...]}]}, each sample flat or
          nested to the signature's per-sample shape.
Response: {"predictions":[{"fields":["logits"],"values":[[10 floats], ...]}]}
Bad input gets 400 with the expected shape, as kiln-serve does.
"""

from __future__ import annotations

import json
import os

import torch


class WatsonMlScorer:
    """Loads MODEL_DIR/model.pt and signature.json; torch pinned to `threads` intra-op
    threads (1 per worker process: N workers use N cores, as kiln-serve's workers do)."""

    def __init__(self, model_dir: str, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.model = torch.jit.load(os.path.join(model_dir, "model.pt")).eval()
        with open(os.path.join(model_dir, "signature.json")) as f:
            signature = json.load(f)
        self.shape = list(signature["inputs"][0]["shape"])
        self.output_name = signature["outputs"][0]["name"]
        self.elements = 1
        for dim in self.shape:
            self.elements *= dim

    def score(self, body: bytes) -> tuple[int, bytes]:
        """Returns (HTTP status, JSON body)."""
        try:
            values = json.loads(body)["input_data"][0]["values"]
            inputs = torch.tensor(values, dtype=torch.float32).reshape([-1, *self.shape])
        except (ValueError, KeyError, IndexError, TypeError, RuntimeError) as e:
            message = f"bad input ({e}); expected input_data[0].values: samples of " \
                      f"float32{self.shape}"
            return 400, json.dumps({"error": message}).encode()
        with torch.inference_mode():
            outputs = self.model(inputs)
        reply = {"predictions": [{"fields": [self.output_name], "values": outputs.tolist()}]}
        return 200, json.dumps(reply).encode()
