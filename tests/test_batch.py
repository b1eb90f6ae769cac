"""`masklet batch` end to end on a local Ray instance with 2 CPU workers and the bundled nano
model: the same masks as `masklet video` per video, a killed worker, Ctrl-C and a rerun,
bad lines and malformed manifests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from masklet.bundled import demo_clip
from masklet.cli import main

ray = pytest.importorskip("ray", reason="masklet[batch] (Ray) is not installed")

PROMPT = [{"frame": 0, "obj": 1, "points": [[35, 45]]}]
LOOSE_AUTO = {"every": 4, "max_objects": 3, "points_per_side": 4, "pred_iou_thresh": 0,
              "stability_thresh": 0}


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance (2 CPUs) for the module: `masklet batch` run in this process
    uses it, a subprocess joins it with --address (Ray's start-up is paid once)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _frames(count: int, seed: int) -> list[np.ndarray]:
    """A red square sliding over a noisy background, [96, 128, 3] uint8 per frame."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
    frames = []
    for i in range(count):
        image = background.copy()
        image[30:60, 20 + 3 * i:50 + 3 * i] = (220, 40, 40)
        frames.append(image)
    return frames


def folder_video(path: Path, count: int, seed: int = 0) -> Path:
    path.mkdir(parents=True)
    for i, image in enumerate(_frames(count, seed)):
        Image.fromarray(image).save(path / f"{i:05d}.jpg")
    return path


def mp4_video(path: Path, count: int, seed: int = 0) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for image in _frames(count, seed):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_manifest(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def batch(*args, code=0):
    result = CliRunner().invoke(main, ["batch", *map(str, args)], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def hidden_leftovers(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".old"))]


def same_outputs(batch_dir: Path, video_dir: Path) -> None:
    """Every palette PNG and masks_coco.json byte for byte (overlay.mp4 aside)."""
    files = sorted(p.relative_to(video_dir) for p in video_dir.rglob("*")
                   if p.suffix in (".png", ".json"))
    assert files and files == sorted(p.relative_to(batch_dir) for p in batch_dir.rglob("*")
                                     if p.suffix in (".png", ".json"))
    for rel in files:
        assert (batch_dir / rel).read_bytes() == (video_dir / rel).read_bytes(), rel


def test_same_masks_as_masklet_video_and_bad_lines_fail_alone(cluster, tmp_path):
    clip = demo_clip()  # the real bedroom clip shipped with the package (30 frames)
    folder = folder_video(tmp_path / "square", 10)
    mp4 = mp4_video(tmp_path / "moving.mp4", 9, seed=1)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": 3, "obj": 2, "box": [30, 25, 85, 65]}]))
    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"video": str(clip), "prompts": [{"frame": 0, "obj": 1, "points": [[240, 140]]}]},
        {"video": "square", "prompts": "p.json"},
        {"video": "moving.mp4", "auto": LOOSE_AUTO, "name": "moving-auto"},
        {"video": "missing.mp4", "prompts": PROMPT},
        {"video": "square", "name": "badprompt", "prompts": [{"frame": 0, "obj": 300,
                                                             "points": [[1, 1]]}]},
        {"video": "moving.mp4", "name": "badauto", "auto": {"every": 0}},
    ])
    out = tmp_path / "out"
    result = batch(manifest, "-o", out, "--workers", 2, "--no-overlay", code=1)
    assert "3 of 6 video(s) failed" in result.output
    by_name = {r["name"]: r for r in records(out)}
    assert len(records(out)) == 6 and set(by_name) == {
        "bedroom", "square", "moving-auto", "missing", "badprompt", "badauto"}
    for name in ("bedroom", "square", "moving-auto"):
        assert by_name[name]["status"] == "ok" and by_name[name]["error"] is None
    assert by_name["bedroom"]["frames"] == 30 and by_name["square"]["frames"] == 10
    assert "video not found" in by_name["missing"]["error"]
    assert "object id 300" in by_name["badprompt"]["error"]
    assert "every" in by_name["badauto"]["error"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "bedroom", "moving-auto", "results.jsonl", "square"]

    reference = CliRunner()
    common = ["-q", "--no-overlay"]
    for name, args in {
        "bedroom": ["video", clip, "--prompt", "0:1:point=240,140"],
        "square": ["video", folder, "--prompts", prompts],
    }.items():
        res = reference.invoke(main, [*map(str, args), "-o", str(tmp_path / f"ref-{name}"),
                                      *common], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        same_outputs(out / name, tmp_path / f"ref-{name}")
    auto = [f"--{k.replace('_', '-')}={v}" for k, v in LOOSE_AUTO.items()]
    res = reference.invoke(main, ["auto-video", str(mp4), "-o", str(tmp_path / "ref-auto"),
                                  "-q", *auto], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    same_outputs(out / "moving-auto", tmp_path / "ref-auto")


def test_killed_worker_is_retried_and_every_video_finishes_once(cluster, tmp_path):
    lines = []
    for k in range(6):
        folder_video(tmp_path / f"v{k}", 12, seed=k)
        lines.append({"video": f"v{k}", "prompts": PROMPT})
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    out = tmp_path / "out"
    killed = []

    def kill_first_worker() -> None:
        # As soon as one video is done, kill the process that did it: it has been handed
        # its next video already.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            path = out / "results.jsonl"
            if path.exists() and path.read_text().strip():
                pid = json.loads(path.read_text().splitlines()[0])["pid"]
                time.sleep(0.5)  # the driver hands it the next video (each takes ~2 s)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_first_worker, daemon=True)
    watcher.start()
    result = batch(manifest, "-o", out, "--workers", 2, "--no-overlay", "--no-coco")
    watcher.join()
    assert killed, "no worker was killed"
    done = records(out)
    assert sorted(r["name"] for r in done) == [f"v{k}" for k in range(6)]  # each once
    assert all(r["status"] == "ok" and r["frames"] == 12 for r in done)
    retried = [r for r in done if r["attempts"] == 2]
    assert len(retried) == 1 and retried[0]["pid"] != killed[0], done
    assert "1 retried after a worker died" in result.output
    assert not hidden_leftovers(out)
    for k in range(6):
        assert len(list((out / f"v{k}" / f"v{k}").glob("*.png"))) == 12


def test_ctrl_c_then_rerun_redoes_only_the_unfinished(cluster, tmp_path):
    lines = []
    for k in range(6):
        folder_video(tmp_path / f"v{k}", 12, seed=k)
        lines.append({"video": f"v{k}", "prompts": PROMPT})
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    out = tmp_path / "out"
    command = [str(Path(sys.executable).parent / "masklet"), "batch", str(manifest), "-o", str(out),
               "--workers", "1", "--address", cluster, "--no-overlay"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    # A guard against a hang, not a speed check: the first record comes within seconds on
    # an idle 2-core machine, much later on a loaded one where Ray and the worker start slowly.
    deadline = time.monotonic() + 300
    while not ((out / "results.jsonl").exists() and (out / "results.jsonl").read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "rerun the same command" in stderr and "Traceback" not in stderr
    first = records(out)
    finished = {r["name"] for r in first}
    assert all(r["status"] == "ok" for r in first) and 1 <= len(finished) < 6
    assert not hidden_leftovers(out)
    folders = {p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert finished <= folders
    # No half-written video folder. A video finished just as Ctrl-C came may have its folder
    # but no record (the worker was killed before it returned): complete, redone on rerun.
    for name in folders:
        assert len(list((out / name / name).glob("*.png"))) == 12, name

    result = batch(manifest, "-o", out, "--workers", 2, "--no-overlay")
    second = records(out)[len(first):]
    assert sorted(r["name"] for r in second) == sorted({f"v{k}" for k in range(6)} - finished)
    assert re.search(rf"^skipped +{len(finished)} ", result.output, re.M), result.output
    assert f"{6 - len(finished)} video(s) in" in result.output
    again = batch(manifest, "-o", out, "--workers", 2, "--no-overlay")
    assert len(records(out)) == 6 and "0 video(s) in" in again.output  # nothing redone


def test_ctrl_c_while_the_workers_load_gives_their_cpus_back(cluster):
    from masklet.batch.runner import ModelSpec, Pool, start_workers

    with pytest.raises(KeyboardInterrupt):
        start_workers(Pool(2, 1.0, 0.0, False), ModelSpec(), stop=lambda: True)
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 2:  # the killed actors' CPUs come back
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.1)


def test_ctrl_c_is_kept_when_a_library_swallows_keyboard_interrupt():
    """Ray checks for signals inside its own waits and may consume the KeyboardInterrupt;
    the batch command polls `interrupt_requests` instead, which a swallowing library cannot
    lose. A second Ctrl-C still raises (the user insists), and the handler is put back."""
    from masklet.cli.common import interrupt_requests

    def library_wait():  # stands for a C++ wait that eats the interrupt
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass

    before = signal.getsignal(signal.SIGINT)
    library_wait()  # with Python's default handler the Ctrl-C is simply gone
    with interrupt_requests() as requested:
        assert not requested.is_set()
        library_wait()
        assert requested.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("lines, message", [
    (["{\"video\": \"a.mp4\", \"prompts\": [] "], "m.jsonl:1: not valid JSON"),
    ([["a.mp4"]], "each line must be a JSON object"),
    ([{"prompts": PROMPT}], "\"video\" must be a path"),
    ([{"video": "a.mp4"}], "give either \"prompts\" or \"auto\""),
    ([{"video": "a.mp4", "prompts": PROMPT, "auto": {}}], "give either"),
    ([{"video": "a.mp4", "prompts": PROMPT, "fps": 3}], "unknown key(s) fps"),
    ([{"video": "a.mp4", "auto": 5}], "\"auto\" must be an object"),
    ([{"video": "x/a.mp4", "prompts": PROMPT}, {"video": "y/a.mp4", "prompts": PROMPT}],
     "m.jsonl:2: output name 'a' is also line 1's"),
    ([{"video": "a.mp4", "prompts": PROMPT, "name": "../up"}], "plain folder name"),
    ([], "lists no videos"),
])
def test_malformed_manifest_exits_2_before_anything_runs(tmp_path, lines, message):
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    result = batch(manifest, "-o", tmp_path / "out", code=2)
    assert message in result.output
    assert result.output.count("\n") == 1 and result.output.startswith("masklet: error:")
    assert not (tmp_path / "out").exists()


def test_missing_manifest_exits_2(tmp_path):
    result = batch(tmp_path / "nope.jsonl", "-o", tmp_path / "out", code=2)
    assert "manifest not found" in result.output and result.output.count("\n") == 1
