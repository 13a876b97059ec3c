#!/usr/bin/python3
"""Anchor: the model behind Flask's threaded development server (Debian python3-flask).

Serves POST /ml/v4/deployments/<id>/predictions (Watson ML v4 payload, any id) with
scoring.WatsonMlScorer: one process, a thread per connection, torch with 1 thread (the GIL
serialises the Python work anyway). Prints "listening on PORT" once it accepts requests.

    OMP_NUM_THREADS=1 /usr/bin/python3 bench/serving/flask_server.py MODEL_DIR --port 8001
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scoring import WatsonMlScorer  # noqa: E402

from flask import Flask, Response, request  # noqa: E402


def create_app(model_dir: str) -> Flask:
    scorer = WatsonMlScorer(model_dir, threads=1)
    app = Flask("kiln-bench-flask")

    @app.post("/ml/v4/deployments/<deployment_id>/predictions")
    def predictions(deployment_id: str) -> Response:
        status, body = scorer.score(request.get_data())
        return Response(body, status=status, mimetype="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    opts = parser.parse_args()
    app = create_app(opts.model_dir)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per request
    print(f"listening on {opts.port}", flush=True)
    app.run(host=opts.host, port=opts.port, threaded=True)


if __name__ == "__main__":
    main()
