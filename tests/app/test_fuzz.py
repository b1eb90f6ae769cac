"""Fuzzing the JSON API from its OpenAPI schema: no input makes the server answer 5xx.

Hypothesis builds, for every route the schema lists (the event stream apart, it never
ends), path and query values and JSON bodies: the fields the route's body model names
with plausible values or junk (NaN, Infinity, integers past 64 bits, booleans, very long
or odd strings, nested lists and objects), unknown fields, non-object bodies and bytes
that are not JSON. Every answer must be below 500, and every error a JSON object with a
string ``detail``. In process (TestClient), bounded: `EXAMPLES` per route, derandomized
so CI sees the same inputs each run; MASKLET_FUZZ_EXAMPLES raises the count and
MASKLET_FUZZ_RANDOM=1 draws new inputs for a deeper local run.
"""

from __future__ import annotations

import json
import os
import time
from urllib.parse import quote

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis (test extra) is not installed")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from .conftest import app_client  # noqa: E402

EXAMPLES = int(os.environ.get("MASKLET_FUZZ_EXAMPLES", "12"))
RANDOM = os.environ.get("MASKLET_FUZZ_RANDOM") == "1"
BUDGET_S = 60.0 * max(1.0, EXAMPLES / 12)
SKIPPED = {"/api/videos/{video_id}/events"}  # a stream that stays open

EXTREME_INTS = [0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64,
                10**30, -(10**30)]
ODD_TEXT = ["", " ", "\x00", "a\x00b", "../" * 40, "/", "/etc/passwd", "%00", "\u202e\ufeff",
            "x" * 5000, "😀" * 300, "NaN", "Infinity", "1e400", "-0", "0x10", " 7 "]


def junk() -> st.SearchStrategy:
    """Any JSON value, leaning on what breaks servers."""
    scalars = st.one_of(
        st.none(), st.booleans(), st.sampled_from(EXTREME_INTS), st.integers(),
        st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(ODD_TEXT),
        st.text(max_size=40))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
        max_leaves=12)


def plausible(name: str) -> st.SearchStrategy:
    """Values a field of this name takes from the page (so deeper code is reached)."""
    point = st.lists(st.floats(-5, 1000, allow_nan=False), min_size=2, max_size=2)
    return {
        "frame": st.integers(-2, 10), "object": st.integers(0, 4), "id": st.integers(0, 300),
        "expected_version": st.integers(-1, 30), "start": st.integers(-2, 10),
        "max_frames": st.integers(-1, 12),
        "points": st.lists(point, max_size=4),
        "labels": st.lists(st.integers(-1, 2), max_size=4),
        "box": st.lists(st.floats(-5, 1000, allow_nan=False), min_size=3, max_size=5),
        "path": st.sampled_from(["clip", "clip/00000.jpg", "missing", "..", "/"]),
        "kind": st.sampled_from(["video", "images", "x"]),
        "direction": st.sampled_from(["both", "forward", "backward", "up"]),
        "format": st.sampled_from(["png", "coco", "davis", "mp4", "zip", "x"]),
        "color": st.sampled_from(["#123456", "#fff", "red", "#12345g"]),
        "name": st.text(max_size=30),
    }.get(name, junk())


def body_of(fields: list[str]) -> st.SearchStrategy:
    """Raw request bytes: mostly an object of the model's fields, sometimes anything."""
    field = st.sampled_from(fields) if fields else st.text(max_size=8)
    value_of = {f: st.one_of(plausible(f), junk()) for f in fields}
    objects = st.lists(field, unique=True, max_size=len(fields) + 1).flatmap(
        lambda keys: st.fixed_dictionaries(
            {k: value_of.get(k, junk()) for k in keys},
            optional={"extra": junk()}))
    as_json = st.one_of(objects, objects, objects, junk()).map(
        lambda v: json.dumps(v, allow_nan=True).encode())
    return st.one_of(as_json, as_json, as_json, st.binary(max_size=64), st.just(b""))


def path_value(name: str, vid: int) -> st.SearchStrategy:
    good = {"video_id": st.just(vid), "frame": st.integers(-1, 9), "obj": st.integers(0, 3),
            "name": st.sampled_from(["x.zip", "..", "%2e%2e"])}.get(name, st.just(1))
    bad = st.one_of(st.sampled_from(EXTREME_INTS), st.sampled_from(ODD_TEXT[:-3]),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
    return st.one_of(good, good, bad).map(lambda v: quote(str(v), safe="") or "0")


def operations(spec: dict) -> list[tuple[str, str, dict]]:
    return [(method.upper(), path, op) for path, ops in spec["paths"].items()
            for method, op in ops.items() if path not in SKIPPED]


def body_fields(spec: dict, op: dict) -> list[str] | None:
    """The body model's field names (None when the route takes no JSON body)."""
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return None
    schema = content["schema"]
    ref = schema.get("$ref") or next(s["$ref"] for s in schema["anyOf"] if "$ref" in s)
    return list(spec["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"])


def request_of(spec: dict, method: str, template: str, op: dict, vid: int):
    """A strategy of (method, url, body bytes or None) for one route."""
    params = op.get("parameters", [])
    in_path = {p["name"]: path_value(p["name"], vid) for p in params if p["in"] == "path"}
    queries = {p["name"]: st.one_of(plausible(p["name"]), junk()).map(str)
               for p in params if p["in"] == "query"}
    fields = body_fields(spec, op)
    body = body_of(fields) if fields is not None else st.one_of(st.none(), body_of([]))

    def build(values, query, raw):
        url = template.format(**values)
        if query:
            url += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        return method, url, raw

    return st.builds(build, st.fixed_dictionaries(in_path),
                     st.fixed_dictionaries({}, optional=queries), body)


def check(response, what) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:300])
    if response.status_code >= 400:
        detail = response.json().get("detail")
        assert isinstance(detail, str) and detail, (what, response.text[:300])


def test_fuzz_json_api_never_answers_5xx(svc):
    client = app_client(svc, raise_server_exceptions=False)
    vid = client.post("/api/videos/open", json={"path": "clip"}).json()["id"]
    client.post(f"/api/videos/{vid}/objects", json={})
    spec = client.get("/api/openapi.json").json()
    ops = operations(spec)
    assert len(ops) > 25, "the schema lists fewer routes than expected"
    started = time.monotonic()
    tried = 0
    for method, template, op in ops:
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(request_of(spec, method, template, op, vid))
        def run(request):
            nonlocal tried
            method_, url, raw = request
            headers = {"Content-Type": "application/json"} if raw is not None else {}
            response = client.request(method_, url, content=raw, headers=headers)
            tried += 1
            check(response, (method_, url, raw[:200] if raw else raw))

        run()
        # Tracking started by a fuzzed request would refuse later edits (409), fine, but
        # it must not outlive its turn: cancel it so the next route sees a quiet video.
        client.post(f"/api/videos/{vid}/track/cancel")
    elapsed = time.monotonic() - started
    print(f"fuzzed {tried} requests over {len(ops)} routes in {elapsed:.1f} s")
    assert elapsed < BUDGET_S, f"the fuzz run took {elapsed:.0f} s (budget {BUDGET_S:.0f} s)"
