"""End-to-end tests of the `masklet` command on real files, reading every output back."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as mask_utils

from conftest import require_data

from masklet.cli import main


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def run(runner, *args, code=0):
    result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


@pytest.fixture(scope="module")
def video12(tmp_path_factory):
    """The first 12 bedroom frames as a JPEG folder."""
    src = require_data("videos", "bedroom")
    out = tmp_path_factory.mktemp("clip") / "bedroom"
    out.mkdir()
    for i in range(12):
        (out / f"{i:05d}.jpg").symlink_to(src / f"{i:05d}.jpg")
    return out


def _palette_ids(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "P"
        return np.asarray(im)


def test_image_outputs(runner, tmp_path):
    photo = require_data("images", "truck.jpg")
    out = tmp_path / "img"
    run(runner, "image", photo, "-p", "900,600", "-p", "300,250:0", "-o", out, "-q")
    assert sorted(p.name for p in out.iterdir()) == ["mask.png", "masks.json", "overlay.png"]
    ids = _palette_ids(out / "mask.png")
    assert ids.shape == (1200, 1800) and set(np.unique(ids)) <= {0, 1}
    coco = json.loads((out / "masks.json").read_text())
    decoded = mask_utils.decode(coco["annotations"][0]["segmentation"])
    assert np.array_equal(decoded.astype(bool), ids == 1)
    with Image.open(out / "overlay.png") as im:
        assert im.size == (1800, 1200)


def test_image_multimask(runner, tmp_path):
    out = tmp_path / "m"
    result = run(runner, "image", require_data("images", "groceries.jpg"), "-p", "400,300",
                 "-o", out)
    assert {"mask_0.png", "mask_1.png", "mask_2.png"} <= {p.name for p in out.iterdir()}
    assert "predicted IoU" in result.output


def test_video_outputs(runner, tmp_path, video12):
    out = tmp_path / "vid"
    run(runner, "video", video12, "--prompt", "0:1:point=400,220", "--prompt",
        "3:2:box=150,120,290,400", "-o", out, "-q")
    pngs = sorted((out / "bedroom").glob("*.png"))
    assert [p.stem for p in pngs] == [f"{i:05d}" for i in range(12)]
    ids = _palette_ids(pngs[5])
    assert ids.shape == (540, 960) and set(np.unique(ids)) <= {0, 1, 2}
    coco = json.loads((out / "masks_coco.json").read_text())
    assert {a["track_id"] for a in coco["annotations"]} <= {1, 2}
    for ann in coco["annotations"][:5]:
        assert mask_utils.area(ann["segmentation"]) == ann["area"]
    with av.open(str(out / "overlay.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 12 and frames[0].shape == (540, 960, 3)


def test_video_prompt_file(runner, tmp_path, video12):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"frame": 0, "obj": 4, "points": [[400, 220]],
                                    "labels": [1]}]))
    out = tmp_path / "v"
    run(runner, "video", video12, "--prompts", prompts, "-o", out, "-q", "--no-overlay",
        "--no-coco")
    assert len(list((out / "bedroom").glob("*.png"))) == 12
    assert not (out / "overlay.mp4").exists()


def test_info(runner, tmp_path):
    assert "sam2.1_hiera_large" in run(runner, "info").output
    from masklet import build_model
    from masklet.checkpoint import save_safetensors

    path = tmp_path / "tiny.safetensors"
    save_safetensors(build_model("masklet_nano", random_weights=True).state_dict(), path)
    assert "fits preset: masklet_nano" in run(runner, "info", path).output


@pytest.mark.parametrize("features", [(), ("avx512_bf16",), ("avx512_bf16", "amx_bf16")])
def test_info_says_which_dtype_is_faster_on_this_cpu(runner, monkeypatch, features):
    """On the CPU, `masklet info` recommends bfloat16 exactly when the CPU multiplies bf16
    natively, naming the features (or their absence)."""
    import torch

    import masklet.cli.common
    from masklet.tracking import precision

    monkeypatch.setattr(masklet.cli.common, "resolve_device", lambda name: torch.device("cpu"))
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: features)
    lines = run(runner, "info").output.splitlines()
    assert lines[-2].startswith("this machine: torch ") and "--device auto picks cpu (" in lines[-2]
    if features:
        assert lines[-1].startswith("faster --dtype here: bfloat16 ("), lines[-1]
        assert f"natively: {', '.join(features)})" in lines[-1]
    else:
        assert lines[-1].startswith("faster --dtype here: float32 (the CPU has neither"), lines[-1]


def test_random_weights_only_when_asked(runner, tmp_path):
    """A preset with no checkpoint is refused unless --random-weights says so."""
    photo = tmp_path / "noise.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(photo)
    args = ["image", photo, "-p", "20,20", "--model", "masklet_nano"]
    result = run(runner, *args, "--random-weights", "-o", tmp_path / "random")
    assert "masklet_nano has random weights" in result.output
    assert (tmp_path / "random" / "masks.json").is_file()
    # The bundled preset by name is the bundled model, not random weights.
    assert "random weights" not in run(runner, *args, "-o", tmp_path / "bundled").output
    refused = [
        (["--model", "tiny"], "--model tiny needs --checkpoint FILE"),
        (["--random-weights"], "--random-weights needs --model"),
        (["--model", "tiny", "--random-weights", "--checkpoint", photo], "exclude each other"),
    ]
    for extra, message in refused:
        result = runner.invoke(main, [str(a) for a in [*args[:4], *extra, "-o", tmp_path / "x"]])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output
    result = runner.invoke(main, ["demo", "--model", "tiny", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--model tiny needs --checkpoint FILE" in result.output
    assert not (tmp_path / "x").exists()


def test_eval(runner, tmp_path):
    gt = require_data("davis2016-train")
    pred = tmp_path / "pred" / "cows"
    pred.mkdir(parents=True)
    for src in sorted((gt / "Annotations" / "480p" / "cows").glob("*.png"))[:10]:
        ids = (np.asarray(Image.open(src)) > 0).astype(np.uint8)
        Image.fromarray(ids).save(pred / src.name)
    csv = tmp_path / "jf.csv"
    result = run(runner, "eval", pred.parent, gt, "--csv", csv)
    assert "J&F" in result.output and csv.is_file()


BAD_INPUT = [
    (["image", "missing.jpg", "-p", "1,1"], "not found"),
    (["image", "{notimage}", "-p", "1,1"], "cannot read image"),
    (["image", "{photo}", "-p", "5000,10"], "outside"),
    (["image", "{photo}", "-p", "5,10", "--model", "sam3_giant", "--checkpoint", "{ckpt}"],
     "unknown preset"),
    (["image", "{photo}", "-p", "5,10", "--model", "sam2.1_hiera_small", "--checkpoint",
      "{ckpt}"], "does not fit preset"),
    (["video", "{notvideo}", "--prompt", "0:1:point=1,1"], "notes.mp4"),
    (["video", "{clip}", "--prompt", "40:1:point=1,1"], "out of range"),
    (["video", "{clip}", "--prompt", "0:1:point=2000,1"], "outside"),
]


@pytest.mark.parametrize("args,message", BAD_INPUT)
def test_bad_input_exits_2_and_writes_nothing(runner, tmp_path, video12, args, message):
    from masklet import build_model
    from masklet.checkpoint import save_safetensors

    ckpt = tmp_path / "nano.safetensors"
    save_safetensors(build_model("masklet_nano", random_weights=True).state_dict(), ckpt)
    (tmp_path / "notes.mp4").write_text("not a video")
    (tmp_path / "notes.jpg").write_text("not an image")
    values = dict(photo=require_data("images", "truck.jpg"), notimage=tmp_path / "notes.jpg",
                  notvideo=tmp_path / "notes.mp4", clip=video12, ckpt=ckpt)
    out = tmp_path / "out"
    argv = [a.format(**values) for a in args] + ["-o", str(out)]
    if "--checkpoint" not in argv:
        argv += ["--checkpoint", str(ckpt)]
    result = runner.invoke(main, argv)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("masklet: error")]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_video_stream_equals_offline(runner, tmp_path, video12):
    args = ["video", video12, "--prompt", "0:1:point=400,220", "--no-overlay", "--no-coco", "-q"]
    run(runner, *args, "-o", tmp_path / "offline")
    run(runner, *args, "--stream", "-o", tmp_path / "stream")
    for png in sorted((tmp_path / "offline" / "bedroom").glob("*.png")):
        assert np.array_equal(_palette_ids(png), _palette_ids(tmp_path / "stream" / "bedroom" /
                                                               png.name)), png.name
    bad = runner.invoke(main, [str(a) for a in args] + ["--stream", "--prompt", "3:2:point=5,5",
                                                        "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "frame 0 only" in bad.output


def test_auto_and_auto_video(runner, tmp_path, video12):
    loose = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-thresh", "0"]
    out = tmp_path / "auto"
    result = run(runner, "auto", require_data("images", "groceries.jpg"), "-o", out, *loose)
    coco = json.loads((out / "masks.json").read_text())
    assert f"{len(coco['annotations'])} masks" in result.output
    labels = _palette_ids(out / "labels.png")
    assert labels.shape == (coco["images"][0]["height"], coco["images"][0]["width"])
    vout = tmp_path / "autovideo"
    run(runner, "auto-video", video12, "-o", vout, "--every", "5", "--max-objects", "3",
        *loose, "-q")
    pngs = sorted((vout / "bedroom").glob("*.png"))
    assert len(pngs) == 12
    assert max(int(_palette_ids(p).max()) for p in pngs) <= 3


def _centroid_x(path) -> float:
    return float(np.argwhere(_palette_ids(path) == 1)[:, 1].mean())


def _mask(path) -> np.ndarray:
    return _palette_ids(path) == 1


def test_demo_runs_anywhere_on_the_bundled_clip(runner, tmp_path, monkeypatch):
    """The README's set-up job, started from a folder with no data nearby: the bundled
    clip (30 frames, 480x270), the girl tracked through it, the prompt and outputs said."""
    monkeypatch.chdir(tmp_path)
    result = run(runner, "demo")
    out = tmp_path / "masklet-demo"
    assert f"wrote {out.resolve()}/" in result.output
    assert "prompted object 1 (the jumping girl) on frame 0 of bedroom.mp4 (480x270)" in \
        result.output
    for line in ("positive at x=210, y=100: her skirt", "positive at x=215, y=45: her face",
                 "negative at x=300, y=172.5: the pink pillow"):
        assert line in result.output, result.output
    pngs = sorted((out / "bedroom").glob("*.png"))
    assert len(pngs) == 30
    first = _mask(pngs[0])
    assert first[100, 210] and first[160, 200] and first[45, 215]  # the positive clicks
    assert not first[172, 300]  # the pillow
    # On the girl all along: her face inside; the boy (left, x < 140) and the pillow (right,
    # x ~300) outside. The demo model loses her legs late in the clip (area ~1/3 of frame 0).
    for frame, face, boy in ((15, (170, 30), (120, 170)), (29, (165, 50), (120, 160))):
        mask = _mask(pngs[frame])
        assert mask[face[1], face[0]] and not mask[boy[1], boy[0]], frame
    for png in pngs:
        mask = _mask(png)
        assert mask.sum() > 1500 and 140 < np.argwhere(mask)[:, 1].mean() < 230, png.name
    with av.open(str(out / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30
    coco = json.loads((out / "masks_coco.json").read_text())
    assert {a["track_id"] for a in coco["annotations"]} == {1}


def test_demo_on_the_full_size_frames_follows_the_girl(runner, tmp_path):
    """--video: the demo's clicks scale to the video's size; on the 60 full 960x540 bedroom
    frames the bundled model tracks the clicked girl throughout. (With a box prompt its
    track moved onto a pillow on the right, centroid x ~630; the girl stays left of x 450.)"""
    out = tmp_path / "demo"
    run(runner, "demo", "--video", require_data("videos", "bedroom"), "-o", out, "-q")
    pngs = sorted((out / "bedroom").glob("*.png"))
    assert len(pngs) == 60
    assert 310 < _centroid_x(pngs[0]) < 520  # the girl on the first frame (x 310..520)
    assert all(_centroid_x(p) < 450 for p in pngs[15::15]), [_centroid_x(p) for p in pngs[15::15]]
    with av.open(str(out / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 60
    coco = json.loads((out / "masks_coco.json").read_text())
    assert {a["track_id"] for a in coco["annotations"]} == {1}


def test_demo_on_a_generated_video(runner, tmp_path):
    out = tmp_path / "demo"
    result = run(runner, "demo", "--synthetic", "-o", out)
    assert len(list((out / "synthetic").glob("*.png"))) == 48
    assert (out / "overlay.mp4").is_file() and (out / "masks_coco.json").is_file()
    assert "mean IoU against the generated ground truth" in result.output
