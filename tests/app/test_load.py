"""Load test on loopback: 20 concurrent clients, a fixed number of requests each.

Each client reads what the page reads (video detail, a frame, its masks, the timeline)
and clicks its own object now and then, all on one video: the clicks of the 20 "tabs"
are serialised by the server, so every one must be stored and the version must count
them exactly. Latency percentiles are printed and recorded; no error is accepted.
"""

from __future__ import annotations

import statistics
import threading
import time

import httpx

from .conftest import APP_HEADERS, counts, live_server

CLIENTS = 20
REQUESTS = 15  # per client; every fifth is a click
CLICK_EVERY = 5


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def client_run(base: str, vid: int, obj: int, out: list, errors: list) -> None:
    with httpx.Client(base_url=base, timeout=60, headers=APP_HEADERS) as http:
        for i in range(REQUESTS):
            frame = (obj + i) % 8
            if i % CLICK_EVERY == CLICK_EVERY - 1:
                # Each tab refines its object on one frame, as an annotator does.
                request = ("POST", f"/api/videos/{vid}/prompts",
                           {"frame": obj % 4, "object": obj, "labels": [1],
                            "points": [[100 + 30 * obj, 50 + 20 * i]]})
            else:
                path = [f"/api/videos/{vid}", f"/api/videos/{vid}/frames/{frame}",
                        f"/api/videos/{vid}/masks/{frame}", f"/api/videos/{vid}/timeline"][i % 4]
                request = ("GET", path, None)
            start = time.perf_counter()
            try:
                response = http.request(request[0], request[1], json=request[2])
                ok = response.status_code == 200
            except httpx.HTTPError as err:
                ok, response = False, err
            out.append((request[0], time.perf_counter() - start))
            if not ok:
                errors.append((request, response))


def test_twenty_concurrent_clients(svc, record_property):
    with live_server(svc) as base:
        setup = httpx.Client(base_url=base, timeout=60, headers=APP_HEADERS)
        vid = setup.post("/api/videos/open", json={"path": "clip"}).json()["id"]
        for _ in range(CLIENTS):
            assert setup.post(f"/api/videos/{vid}/objects", json={}).status_code == 201
        version = setup.get(f"/api/videos/{vid}").json()["version"]
        before = counts(svc)
        timings: list = []
        errors: list = []
        threads = [threading.Thread(target=client_run, args=(base, vid, obj, timings, errors))
                   for obj in range(1, CLIENTS + 1)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        wall = time.perf_counter() - start
        clicks = CLIENTS * (REQUESTS // CLICK_EVERY)
        assert setup.get(f"/api/videos/{vid}").json()["version"] == version + clicks
        setup.close()

    assert not errors, errors[:3]
    assert len(timings) == CLIENTS * REQUESTS
    assert counts(svc)["actions"] - before["actions"] == clicks
    report = {}
    for kind in ("GET", "POST"):
        values = [s for method, s in timings if method == kind]
        report[kind] = {q: percentile(values, q) * 1000 for q in (50, 90, 99, 100)}
        report[kind]["mean"] = statistics.mean(values) * 1000
    print(f"\n{CLIENTS} clients x {REQUESTS} requests in {wall:.2f} s, 0 errors; latency ms:")
    for kind, stats in report.items():
        print(f"  {kind:4s} " + "  ".join(f"p{q}={v:.0f}" if isinstance(q, int) else
                                          f"{q}={v:.0f}" for q, v in stats.items()))
    record_property("load_latency_ms", report)
    record_property("load_wall_s", wall)
