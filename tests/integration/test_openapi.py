"""docs/openapi.yaml documents exactly the routes that kilnd registers.

Every ``router.Add("METHOD", PATH, ...)`` in the API's sources (src/kiln/api/native_api.cc,
experiments_api.cc, elastic_api.cc, models_api.cc, deployments_api.cc, the prediction routes'
inference_api.cc, the Watson ML v4 dialect's wml_api.cc and the WMLA dialect's wmla_api.cc)
must appear in docs/openapi.yaml as
``paths: /path: method:``, and every documented (method, path) must be registered there.
PATH is a string literal, or a string constant of the same file plus a literal (wmla_api.cc
writes ``b + "/hypersearch"`` with ``const std::string b = kBase;``); a ``router.Add`` whose
path cannot be read that way fails the test rather than being skipped.
Static: no server is started.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
API_DIR = ROOT / "src" / "kiln" / "api"
NATIVE_API = API_DIR / "native_api.cc"
WMLA_API = API_DIR / "wmla_api.cc"
INFERENCE_API = API_DIR / "inference_api.cc"
WML_API = API_DIR / "wml_api.cc"
# Every source that registers routes documented in docs/openapi.yaml.
API_SOURCES = [NATIVE_API, API_DIR / "experiments_api.cc", API_DIR / "elastic_api.cc",
               API_DIR / "models_api.cc", API_DIR / "deployments_api.cc", INFERENCE_API,
               WML_API, WMLA_API]
OPENAPI = ROOT / "docs" / "openapi.yaml"
WMLA_BASE = "/platform/rest/deeplearning/v1"

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# router.Add("METHOD", <path expression>, ...): the expression runs to the next comma (paths
# hold none).
ROUTE_RE = re.compile(r'router\.Add\(\s*"([A-Za-z]+)"\s*,\s*([^,]+?)\s*,')
ADD_RE = re.compile(r"router\.Add\(")
# String constants a path expression may start with.
CHAR_ARRAY_RE = re.compile(r'constexpr\s+char\s+(\w+)\[\]\s*=\s*"([^"]*)"\s*;')
STRING_ALIAS_RE = re.compile(r'const\s+std::string\s+(\w+)\s*=\s*(\w+|"[^"]*")\s*;')
LITERAL_RE = re.compile(r'"([^"]*)"')
CONCAT_RE = re.compile(r'(\w+)\s*\+\s*"([^"]*)"')


def string_constants(text: str) -> dict[str, str]:
    consts = dict(CHAR_ARRAY_RE.findall(text))
    for name, value in STRING_ALIAS_RE.findall(text):
        if value.startswith('"'):
            consts[name] = value[1:-1]
        elif value in consts:
            consts[name] = consts[value]
    return consts


def routes_in(source: Path) -> set[tuple[str, str]]:
    """The (METHOD, path) pairs one source registers; fails on a path it cannot read."""
    text = source.read_text(encoding="utf-8")
    consts = string_constants(text)
    routes = set()
    matches = ROUTE_RE.findall(text)
    assert len(matches) == len(ADD_RE.findall(text)), (
        f"{source.name}: some router.Add(...) calls do not have the form "
        '("METHOD", PATH, ...); teach this test their form')
    for method, expr in matches:
        literal = LITERAL_RE.fullmatch(expr)
        concat = CONCAT_RE.fullmatch(expr)
        if literal:
            path = literal.group(1)
        elif concat and concat.group(1) in consts:
            path = consts[concat.group(1)] + concat.group(2)
        else:
            raise AssertionError(f"{source.name}: cannot read the route path {expr!r}")
        routes.add((method.upper(), path))
    return routes


def code_routes() -> set[tuple[str, str]]:
    routes = set()
    for source in API_SOURCES:
        routes |= routes_in(source)
    return routes


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
    routes = routes_in(NATIVE_API)
    # A regex that silently stops matching would make the checks below vacuous.
    assert len(routes) >= 10, f"only {len(routes)} router.Add(...) lines matched in {NATIVE_API}"
    assert ("GET", "/api/v1/health") in routes


def test_wmla_routes_are_found():
    routes = routes_in(WMLA_API)
    assert len(routes) >= 20, f"only {len(routes)} router.Add(...) lines matched in {WMLA_API}"
    # Both path forms: a literal, and the base constant plus a literal.
    assert ("GET", "/auth/v1/logon") in routes
    assert ("POST", WMLA_BASE + "/hypersearch") in routes
    assert ("GET", WMLA_BASE + "/execs/{id}/log") in routes


def test_serving_and_wml_routes_are_found():
    # Both files once registered routes in loops and with StrCat'd paths, which this test
    # cannot read: make sure every route is a literal the regex sees.
    serving = routes_in(INFERENCE_API)
    assert ("POST", "/api/v1/deployments/{id}/predict") in serving
    assert ("POST", "/ml/v4/deployments/{id}/predictions") in serving
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        assert ("POST", path) in serving
    for path in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}",
                 "/v2/models/{name}/ready", "/v2/models/{name}/versions/{version}/ready",
                 "/v2/health/live", "/v2/health/ready", "/v2"):
        assert ("GET", path) in serving
    wml = routes_in(WML_API)
    assert len(wml) >= 26, f"only {len(wml)} router.Add(...) lines matched in {WML_API}"
    assert ("GET", "/v1/preauth/validateAuth") in wml
    assert ("GET", "/v2/hardware_specifications/{id}") in wml
    assert ("PUT", "/ml/v4/model_definitions/{id}/model") in wml
    assert ("DELETE", "/ml/v4/deployments/{id}") in wml


def test_every_registered_route_is_documented():
    missing = sorted(code_routes() - documented_routes())
    assert not missing, (
        "routes registered in src/kiln/api but missing from "
        "docs/openapi.yaml: " + ", ".join(f"{m} {p}" for m, p in missing))


def test_every_documented_route_is_registered():
    extra = sorted(documented_routes() - code_routes())
    assert not extra, (
        "routes in docs/openapi.yaml that src/kiln/api does not "
        "register: " + ", ".join(f"{m} {p}" for m, p in extra))


def test_wmla_routes_carry_the_wmla_tag():
    try:
        import yaml  # type: ignore
    except ImportError:
        return  # the tag check needs the parsed document
    doc = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    wmla_paths = {p for _, p in routes_in(WMLA_API)}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            tags = op.get("tags", [])
            if path in wmla_paths:
                assert tags == ["WMLA"], f"{method.upper()} {path} is WMLA's: tag it WMLA"
            else:
                assert "WMLA" not in tags, f"{method.upper()} {path} is not a WMLA route"


def test_line_reader_agrees_with_yaml():
    text = OPENAPI.read_text(encoding="utf-8")
    try:
        import yaml  # type: ignore
    except ImportError:
        return  # only the line reader is available; the tests above already used it
    doc = yaml.safe_load(text)
    assert doc["openapi"].startswith("3.0")
    assert documented_routes_by_lines(text) == documented_routes()
