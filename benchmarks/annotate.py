"""The annotation app's speed: click-to-mask latency and tracking throughput over HTTP,
next to masklet's own VideoPredictor / StreamingTracker on the same frames and weights.

The app runs as a real `masklet serve` child process on a loopback port; this process is
only its HTTP client, then runs the library on the same weights (one after the other, so
they never share the CPU).

click: the time from sending POST /prompts to having its answer (the frame's mask PNG
    is in it). "cold": a frame whose image features are not computed yet; "warm": the
    next click on a frame whose features are cached (the usual refinement click). The
    library's click is `add_new_points_or_box` on a frame with / without features.
track: frames per second of one object tracked forward from a click on frame 0; for
    the app, from POST /track until the job reads done (every frame's masks encoded and
    committed to SQLite on the way), and the job's own start/finish time.

    python benchmarks/annotate.py                 # tiny (random weights), 1024 px
    python benchmarks/annotate.py --model nano    # the bundled nano demo model, 256 px
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table

REPO = Path(__file__).resolve().parents[1]
FRAMES_DIR = REPO.parent / "shared" / "data" / "videos" / "bedroom"
CLICK = [400.0, 220.0]  # the girl on the bedroom video's first frame


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["tiny", "nano"], default="tiny",
                   help="tiny: sam2.1_hiera_tiny with seeded random weights at 1024 px; "
                        "nano: the bundled demo model (256 px)")
    p.add_argument("--frames", type=int, default=8, help="frames tracked")
    p.add_argument("--clicks", type=int, default=3, help="cold / warm clicks timed (each)")
    p.add_argument("--threads", type=int, default=None, help="torch threads on both sides")
    p.add_argument("--frames-dir", type=Path, default=FRAMES_DIR)
    return p.parse_args()


def weights(kind: str, folder: Path) -> tuple[object, list[str]]:
    """(the model, the `masklet serve` options that load the same weights)."""
    from masklet.build import build_model
    from masklet.bundled import bundled_checkpoint, bundled_preset
    from masklet.checkpoint import save_safetensors

    if kind == "nano":
        path = bundled_checkpoint()
        return build_model(bundled_preset(), checkpoint=path), ["--checkpoint", str(path)]
    torch.manual_seed(0)
    model = build_model("sam2.1_hiera_tiny", random_weights=True)
    path = folder / "tiny-random.safetensors"
    save_safetensors(model.state_dict(), path)
    return model, ["--model", "sam2.1_hiera_tiny", "--checkpoint", str(path)]


def serve(folder: Path, root: Path, options: list[str], threads: int | None
          ) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log = folder / "server.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from masklet.cli import main; main()", "serve", "--port",
             "0", "--data-dir", str(folder / "data"), "--roots", str(root), *options],
            stdout=subprocess.DEVNULL, stderr=err, env=env)
    deadline = time.monotonic() + 300
    while True:
        found = re.search(r"serving (http://[\d.]+:\d+)/", log.read_text())
        if found:
            try:
                httpx.get(found.group(1) + "/api/info", timeout=5).raise_for_status()
                return proc, found.group(1)
            except httpx.TransportError:
                pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"masklet serve did not start:\n{log.read_text()}")
        time.sleep(0.1)


def timed_post(http: httpx.Client, url: str, body: dict) -> float:
    start = time.perf_counter()
    response = http.post(url, json=body)
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed


def app_clicks(http: httpx.Client, clicks: int) -> dict[str, float]:
    """Median click latencies (s) through the API, on a session of their own."""
    vid = http.post("/api/videos/open", json={"path": "clip", "name": "clicks"}).json()["id"]
    http.post(f"/api/videos/{vid}/objects", json={})
    url = f"/api/videos/{vid}/prompts"
    first = timed_post(http, url, {"frame": 0, "object": 1, "points": [CLICK], "labels": [1]})
    cold, warm = [], []
    for frame in range(1, clicks + 1):
        body = {"frame": frame, "object": 1, "points": [CLICK], "labels": [1]}
        cold.append(timed_post(http, url, body))
        warm.append(timed_post(http, url, {**body, "points": [[300.0, 200.0]]}))
    return {"first": first, "cold": statistics.median(cold), "warm": statistics.median(warm)}


def app_track(http: httpx.Client, frames: int) -> tuple[float, float]:
    """(client seconds from POST /track to done, the job's own seconds)."""
    vid = http.post("/api/videos/open", json={"path": "clip", "name": "track"}).json()["id"]
    http.post(f"/api/videos/{vid}/objects", json={})
    http.post(f"/api/videos/{vid}/prompts",
              json={"frame": 0, "object": 1, "points": [CLICK], "labels": [1]}).raise_for_status()
    start = time.perf_counter()
    http.post(f"/api/videos/{vid}/track", json={"direction": "forward"}).raise_for_status()
    while (job := http.get(f"/api/videos/{vid}/track").json())["state"] == "running":
        time.sleep(0.01)
    wall = time.perf_counter() - start
    if job["state"] != "done" or job["done"] != frames:
        raise SystemExit(f"tracking through the app failed: {job}")
    return wall, job["finished_at"] - job["started_at"]


@torch.inference_mode()
def library_clicks(model, clip: Path, clicks: int) -> dict[str, float]:
    from masklet import VideoPredictor

    predictor = VideoPredictor(model, progress=False)
    state = predictor.init_state(str(clip), feature_cache_size=4)
    cold, warm = [], []
    for frame in range(1, clicks + 1):
        for points, out in (([CLICK], cold), ([[300.0, 200.0]], warm)):
            start = time.perf_counter()
            _, _, logits = predictor.add_new_points_or_box(state, frame, 1, points=points,
                                                           labels=[1], clear_old_points=False)
            (logits > 0).cpu().numpy()
            out.append(time.perf_counter() - start)
    return {"cold": statistics.median(cold), "warm": statistics.median(warm)}


@torch.inference_mode()
def library_track(model, clip: Path) -> tuple[float, float]:
    """(VideoPredictor seconds, StreamingTracker seconds) for the same click and frames."""
    from masklet import StreamingTracker, VideoPredictor

    predictor = VideoPredictor(model, progress=False)
    state = predictor.init_state(str(clip))
    predictor.add_new_points_or_box(state, 0, 1, points=[CLICK], labels=[1])
    start = time.perf_counter()
    for _, _, logits in predictor.propagate_in_video(state):
        (logits > 0).cpu().numpy()
    offline = time.perf_counter() - start
    start = time.perf_counter()
    with StreamingTracker(model).start(str(clip)) as session:
        session.add_points(1, [CLICK], [1])
        for tracked in session:
            (tracked.masks > 0).cpu().numpy()
    return offline, time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="masklet-bench-"))
    try:
        clip = folder / "root" / "clip"
        clip.mkdir(parents=True)
        sources = sorted(args.frames_dir.glob("*.jpg"))[: args.frames]
        if len(sources) < args.frames:
            raise SystemExit(f"{args.frames_dir} has fewer than {args.frames} JPEG frames")
        for src in sources:
            shutil.copy(src, clip / src.name)
        model, options = weights(args.model, folder)

        proc, url = serve(folder, clip.parent, options, args.threads)
        try:
            with httpx.Client(base_url=url, timeout=600,
                              headers={"X-Masklet": "1"}) as http:
                app_click = app_clicks(http, args.clicks)
                app_wall, app_job = app_track(http, args.frames)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        lib_click = library_clicks(model, clip, args.clicks)
        offline, stream = library_track(model, clip)
        report(args, model, app_click, lib_click, app_wall, app_job, offline, stream)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report(args, model, app_click, lib_click, app_wall, app_job, offline, stream) -> None:
    n = args.frames
    print(f"{args.model}: {model.config.name} at {model.image_size} px, {n} bedroom frames "
          f"(960x540), 1 object; torch threads {args.threads or torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f}")

    def ms(s: float) -> str:
        return f"{1000 * s:.0f}"

    print_table(["click to mask", "app ms", "library ms", "app / library"], [
        ["first click (opens the video)", ms(app_click["first"]), "-", "-"],
        ["cold (features not cached)", ms(app_click["cold"]), ms(lib_click["cold"]),
         f"{app_click['cold'] / lib_click['cold']:.2f}"],
        ["warm (features cached)", ms(app_click["warm"]), ms(lib_click["warm"]),
         f"{app_click['warm'] / lib_click['warm']:.2f}"],
    ])
    print(f"warm click / cold click through the app: {app_click['warm'] / app_click['cold']:.2f}")
    print()
    rows = [["app, POST to done (HTTP client)", app_wall], ["app, job start to finish", app_job],
            ["library VideoPredictor", offline], ["library StreamingTracker", stream]]
    print_table(["tracking", "s", "frames/s", "vs VideoPredictor"],
                [[name, f"{s:.2f}", f"{n / s:.2f}", f"{offline / s:.2f}x"] for name, s in rows])


if __name__ == "__main__":
    main()
