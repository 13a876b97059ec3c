"""Anchor: the model as a plain WSGI app for gunicorn (Debian gunicorn), one torch per worker.

No framework between gunicorn and scoring.WatsonMlScorer, which gives this anchor its best
case. Each worker process loads the model after the fork (no --preload: torch's thread pools
do not survive a fork) with 1 torch thread. The harness runs, e.g.:

    SERVING_MODEL_DIR=/tmp/m/mlp OMP_NUM_THREADS=1 gunicorn --chdir bench/serving \
        -w 2 -k gthread --threads 4 -b 127.0.0.1:8002 gunicorn_app:application
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scoring import WatsonMlScorer  # noqa: E402

_scorer = WatsonMlScorer(os.environ["SERVING_MODEL_DIR"], threads=1)
_REASONS = {200: "200 OK", 400: "400 Bad Request", 404: "404 Not Found",
            405: "405 Method Not Allowed"}


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if not (path.startswith("/ml/v4/deployments/") and path.endswith("/predictions")):
        status, body = 404, b'{"error":"POST /ml/v4/deployments/{id}/predictions"}'
    elif environ["REQUEST_METHOD"] != "POST":
        status, body = 405, b'{"error":"POST only"}'
    else:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        status, body = _scorer.score(environ["wsgi.input"].read(length))
    start_response(_REASONS[status], [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
    return [body]
