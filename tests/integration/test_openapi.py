"""docs/openapi.yaml documents exactly the routes that kilnd registers.

Every ``router.Add("METHOD", "/path", ...)`` in the native API's sources
(src/kiln/api/native_api.cc, experiments_api.cc) must appear in docs/openapi.yaml as
``paths: /path: method:``, and every documented (method, path) must be registered there.
Static: no server is started.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NATIVE_API = ROOT / "src" / "kiln" / "api" / "native_api.cc"
# Every source that registers /api/v1 routes documented in docs/openapi.yaml.
NATIVE_API_SOURCES = [NATIVE_API, ROOT / "src" / "kiln" / "api" / "experiments_api.cc"]
OPENAPI = ROOT / "docs" / "openapi.yaml"

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ROUTE_RE = re.compile(r'router\.Add\(\s*"([A-Za-z]+)"\s*,\s*"([^"]+)"')


def code_routes() -> set[tuple[str, str]]:
    text = "\n".join(p.read_text(encoding="utf-8") for p in NATIVE_API_SOURCES)
    return {(method.upper(), path) for method, path in ROUTE_RE.findall(text)}


def documented_routes_by_lines(text: str) -> set[tuple[str, str]]:
    """Reads `paths:` with a small line-based reader (for when PyYAML is missing).

    Expects the usual block layout: `paths:` at column 0, each path key indented by some
    width, and its operations one level deeper.
    """
    routes = set()
    in_paths = False
    path_indent = None
    current = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            in_paths = line == "paths:"
            current = None
            continue
        if not in_paths:
            continue
        key = line.strip()
        if path_indent is None and key.startswith("/"):
            path_indent = indent
        if indent == path_indent:
            m = re.fullmatch(r"""["']?(/[^"':]*)["']?\s*:""", key)
            current = m.group(1) if m else None
            continue
        if current is not None and path_indent is not None and indent > path_indent:
            m = re.fullmatch(r"([a-z]+)\s*:.*", key)
            if m and m.group(1) in HTTP_METHODS and indent == path_indent + 2:
                routes.add((m.group(1).upper(), current))
    return routes


def documented_routes() -> set[tuple[str, str]]:
    text = OPENAPI.read_text(encoding="utf-8")
    try:
        import yaml  # type: ignore
    except ImportError:
        return documented_routes_by_lines(text)
    doc = yaml.safe_load(text)
    routes = set()
    for path, item in (doc.get("paths") or {}).items():
        for method in item or {}:
            if method in HTTP_METHODS:
                routes.add((method.upper(), path))
    return routes


def test_native_api_routes_are_found():
    routes = code_routes()
    # A regex that silently stops matching would make the checks below vacuous.
    assert len(routes) >= 10, f"only {len(routes)} router.Add(...) lines matched in {NATIVE_API}"
    assert ("GET", "/api/v1/health") in routes


def test_every_registered_route_is_documented():
    missing = sorted(code_routes() - documented_routes())
    assert not missing, (
        "routes registered in src/kiln/api (native, experiments) but missing from docs/openapi.yaml: "
        + ", ".join(f"{m} {p}" for m, p in missing))


def test_every_documented_route_is_registered():
    extra = sorted(documented_routes() - code_routes())
    assert not extra, (
        "routes in docs/openapi.yaml that src/kiln/api (native, experiments) does not register: "
        + ", ".join(f"{m} {p}" for m, p in extra))


def test_line_reader_agrees_with_yaml():
    text = OPENAPI.read_text(encoding="utf-8")
    try:
        import yaml  # type: ignore
    except ImportError:
        return  # only the line reader is available; the tests above already used it
    doc = yaml.safe_load(text)
    assert doc["openapi"].startswith("3.0")
    assert documented_routes_by_lines(text) == documented_routes()
