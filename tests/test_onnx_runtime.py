"""The torch-free runtime's export-folder checks, its image predictor against masklet's
`ImagePredictor`, and `masklet image / video --onnx` end to end.

Folder checks run on a hand-made one-node graph; the rest on conftest's export of
sam2.1_hiera_tiny at 256 px with random weights (exported once per test run).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from masklet.cli import main
from masklet_runtime.errors import ExportError
from masklet_runtime.graphs import FORMAT_VERSIONS, load_graphs
from tests.conftest import require_data

onnx = pytest.importorskip("onnx", reason="masklet[onnx] (onnx, onnxruntime) is not installed")
from onnx import TensorProto, helper  # noqa: E402


# ------------------------------------------------------------------ a hand-made export
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_tiny_export(root: Path, *, in_name="x", elem=TensorProto.FLOAT) -> Path:
    """A valid export folder: one Relu graph 'relu' (x [B, 4] -> y [B, 4]) + constants."""
    root.mkdir(parents=True, exist_ok=True)
    x = helper.make_tensor_value_info(in_name, elem, ["B", 4])
    y = helper.make_tensor_value_info("y", elem, ["B", 4])
    graph = helper.make_graph([helper.make_node("Relu", [in_name], ["y"])], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # readable by older onnxruntime releases too
    onnx.save(model, root / "relu.onnx")
    np.savez(root / "constants.npz", no_mem_embed=np.arange(4, dtype=np.float32))
    io = lambda n: [{"name": n, "dtype": "float32", "shape": ["B", 4]}]  # noqa: E731
    manifest = {
        "format": "masklet-onnx", "format_version": FORMAT_VERSIONS[-1], "masklet_version": "test",
        "preset": "none", "opset": 17,
        "graphs": {"relu": {"file": "relu.onnx", "sha256": _sha(root / "relu.onnx"),
                            "inputs": io("x"), "outputs": io("y")}},
        "constants": {"file": "constants.npz", "sha256": _sha(root / "constants.npz")},
        "settings": {"image_size": 64},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _edit_manifest(root: Path, edit) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    edit(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))


def _set_io(key: str, field: str, value):
    def edit(m):
        m["graphs"]["relu"][key][0][field] = value
    return edit


def _tamper_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # still a file of the same size: only the digest can tell
    path.write_bytes(bytes(data))


# (case id, how to break a valid folder, a fragment the one-line error must contain)
BAD_DIRS = [
    ("no-manifest", lambda r: (r / "manifest.json").unlink(), "no manifest.json"),
    ("not-json", lambda r: (r / "manifest.json").write_text("{oops"), "not readable JSON"),
    ("other-format", lambda r: _edit_manifest(r, lambda m: m.update(format="other")),
     "format is 'other'"),
    ("retired-format-version",  # 1: memory_attention took the frame once per object
     lambda r: _edit_manifest(r, lambda m: m.update(format_version=1)),
     "another masklet version's format"),
    ("graph-missing", lambda r: (r / "relu.onnx").unlink(), "relu.onnx is missing"),
    ("graph-tampered", lambda r: _tamper_bytes(r / "relu.onnx"), "does not match the manifest"),
    ("sha-edited", lambda r: _edit_manifest(
        r, lambda m: m["graphs"]["relu"].update(sha256="0" * 64)), "does not match the manifest"),
    ("constants-tampered", lambda r: _tamper_bytes(r / "constants.npz"),
     "does not match the manifest"),
    ("input-name", lambda r: _edit_manifest(r, _set_io("inputs", "name", "image")),
     "inputs are ['x'] but the manifest says ['image']"),
    ("output-dtype", lambda r: _edit_manifest(r, _set_io("outputs", "dtype", "int64")),
     "output 'y' is float32 but the manifest says int64"),
    ("input-rank", lambda r: _edit_manifest(r, _set_io("inputs", "shape", ["B", 2, 2])),
     "has rank 2 but the manifest says 3"),
]


def test_a_valid_folder_loads_and_runs(tmp_path):
    graphs = load_graphs(_write_tiny_export(tmp_path / "exp"))
    out = graphs.run("relu", x=[[-1.0, 2.0, -3.0, 4.0]])
    np.testing.assert_array_equal(out["y"], [[0.0, 2.0, 0.0, 4.0]])
    assert graphs.settings == {"image_size": 64}
    np.testing.assert_array_equal(graphs.constants["no_mem_embed"], np.arange(4))
    assert graphs.manifest["format_version"] == FORMAT_VERSIONS[-1]
    # The sessions' threads sleep between runs (spinning ones slow the tracker 3x on small
    # models; graphs.py), with the thread count asked for.
    graphs = load_graphs(tmp_path / "exp", intra_op_threads=3)
    options = graphs.sessions["relu"].get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 3


@pytest.mark.parametrize("case, breakage, fragment", BAD_DIRS, ids=[c[0] for c in BAD_DIRS])
def test_bad_folder_is_a_one_line_error_naming_what_differs(tmp_path, case, breakage, fragment):
    root = _write_tiny_export(tmp_path / "exp")
    breakage(root)
    with pytest.raises(ExportError) as info:
        load_graphs(root)
    message = str(info.value)
    assert fragment in message and "\n" not in message, message


def test_a_graph_whose_file_differs_from_a_correct_manifest_is_caught(tmp_path):
    """The manifest is right for the graph that should be there; a re-exported graph with
    other inputs (and the manifest's digest updated to hide it) still fails the I/O check."""
    root = _write_tiny_export(tmp_path / "exp")
    other = _write_tiny_export(tmp_path / "other", in_name="image", elem=TensorProto.FLOAT)
    (root / "relu.onnx").write_bytes((other / "relu.onnx").read_bytes())
    _edit_manifest(root, lambda m: m["graphs"]["relu"].update(sha256=_sha(root / "relu.onnx")))
    with pytest.raises(ExportError, match=r"inputs are \['image'\] but the manifest says \['x'\]"):
        load_graphs(root)


def test_missing_folder_and_unknown_graph(tmp_path):
    with pytest.raises(ExportError, match="no such export folder"):
        load_graphs(tmp_path / "nowhere")
    graphs = load_graphs(_write_tiny_export(tmp_path / "exp"))
    with pytest.raises(ExportError, match="no graph 'decoder'"):
        graphs.run("decoder", x=np.zeros((1, 4)))


# ------------------------------------------------------------------ CLI on bad folders
def _png(path: Path, size=(40, 30)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _assert_one_line_exit_2(result, fragment: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("masklet: error:"), result.output
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("case, breakage, fragment", BAD_DIRS, ids=[c[0] for c in BAD_DIRS])
def test_cli_image_bad_onnx_dir_exits_2(tmp_path, case, breakage, fragment):
    root = _write_tiny_export(tmp_path / "exp")
    breakage(root)
    image = _png(tmp_path / "in.png")
    result = CliRunner().invoke(main, ["image", str(image), "-p", "5,5", "--onnx", str(root),
                                       "-o", str(tmp_path / "out")])
    _assert_one_line_exit_2(result, fragment)
    assert not (tmp_path / "out").exists()


def test_cli_video_bad_onnx_dir_exits_2(tmp_path):
    root = _write_tiny_export(tmp_path / "exp")
    _edit_manifest(root, lambda m: m.update(format_version=99))
    frames = tmp_path / "frames"
    frames.mkdir()
    _png(frames / "00000.jpg")
    result = CliRunner().invoke(main, ["video", str(frames), "--prompt", "0:1:point=5,5",
                                       "--onnx", str(root), "-o", str(tmp_path / "out")])
    _assert_one_line_exit_2(result, "another masklet version's format")


@pytest.mark.parametrize("extra, flag", [
    (["--motion"], "--motion"), (["--compile"], "--compile"),
    (["--model", "tiny"], "--model"), (["--dtype", "bfloat16"], "--dtype"),
    (["--random-weights"], "--random-weights"),
])
def test_cli_video_options_without_onnx_meaning_exit_2(tmp_path, extra, flag):
    root = _write_tiny_export(tmp_path / "exp")
    frames = tmp_path / "frames"
    frames.mkdir()
    _png(frames / "00000.jpg")
    result = CliRunner().invoke(main, ["video", str(frames), "--prompt", "0:1:point=5,5",
                                       "--onnx", str(root), "-o", str(tmp_path / "out"), *extra])
    _assert_one_line_exit_2(result, f"{flag} has no meaning with --onnx")


def test_cli_without_the_runtime_says_how_to_install_it(tmp_path, monkeypatch):
    # A None entry in sys.modules makes `import masklet_runtime.image` raise ImportError.
    monkeypatch.setitem(sys.modules, "masklet_runtime.image", None)
    root = _write_tiny_export(tmp_path / "exp")
    image = _png(tmp_path / "in.png")
    result = CliRunner().invoke(main, ["image", str(image), "-p", "5,5", "--onnx", str(root),
                                       "-o", str(tmp_path / "out")])
    _assert_one_line_exit_2(result, "pip install ./runtime")


# ------------------------------------------------------------------ a real export
@pytest.fixture(scope="module")
def tiny_export(tiny256_onnx):
    """(masklet model, export folder): sam2.1_hiera_tiny at 256 px, seeded random weights,
    exported once per test run (conftest's `tiny256_onnx`)."""
    return tiny256_onnx


def _rel(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max(1, max |ref|): the project's parity measure."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / max(1.0, np.abs(ref).max()))


def _truck() -> np.ndarray:
    return np.asarray(Image.open(require_data("images", "truck.jpg")).convert("RGB"))


# Prompts on the 1800x1200 truck photo: (kwargs for predict, multimask_output).
PROMPTS = {
    "one-click-multi": (dict(point_coords=[[900, 600]], point_labels=[1]), True),
    "two-clicks-single": (dict(point_coords=[[900, 600], [300, 900]], point_labels=[1, 0]),
                          False),
    "box-single": (dict(box=[500, 300, 1400, 1000]), False),
    "box-and-click-multi": (dict(box=[500, 300, 1400, 1000], point_coords=[[1000, 700]],
                                 point_labels=[1]), True),
    "batch-of-2": (dict(point_coords=[[[900, 600]], [[200, 200]]], point_labels=[[1], [1]]),
                   True),
    "normalized": (dict(point_coords=[[0.5, 0.5]], point_labels=[1], normalize_coords=False),
                   False),
}


@pytest.fixture(scope="module")
def image_pair(tiny_export):
    """(masklet ImagePredictor, OnnxImagePredictor), both with the truck photo set."""
    from masklet.predictor.image import ImagePredictor
    from masklet_runtime.image import OnnxImagePredictor

    model, folder = tiny_export
    rgb = _truck()
    ref, ours = ImagePredictor(model), OnnxImagePredictor(folder)
    ref.set_image(rgb)
    ours.set_image(rgb)
    return ref, ours


def test_onnx_image_embedding_equals_masklet(image_pair):
    ref, ours = image_pair
    assert _rel(ours.get_image_embedding(), ref.get_image_embedding().numpy()) <= 1e-3


@pytest.mark.parametrize("case", list(PROMPTS))
def test_onnx_image_predictor_equals_image_predictor(image_pair, case):
    ref, ours = image_pair
    kwargs, multimask = PROMPTS[case]
    want = ref.predict(**kwargs, multimask_output=multimask, return_logits=True)
    got = ours.predict(**kwargs, multimask_output=multimask, return_logits=True)
    for name, g, w in zip(("masks", "ious", "low_res"), got, want):
        assert g.shape == w.shape, (name, g.shape, w.shape)
        assert _rel(g, w) <= 1e-3, (name, _rel(g, w))
    # Boolean masks: the same wherever the logit is not within the tolerance of 0.
    masks, _, _ = ours.predict(**kwargs, multimask_output=multimask)
    ref_masks, _, _ = ref.predict(**kwargs, multimask_output=multimask)
    assert masks.dtype == bool and masks.shape == ref_masks.shape
    sure = np.abs(want[0]) > 1e-3 * max(1.0, np.abs(want[0]).max())
    assert np.array_equal(masks[sure], ref_masks[sure])


def test_onnx_image_predictor_mask_input_equals_image_predictor(image_pair):
    """A follow-up click with the previous call's best low-res logits as mask prompt."""
    ref, ours = image_pair
    _, ious, low = ref.predict([[900, 600]], [1], multimask_output=True)
    prior = low[np.argmax(ious)][None]  # [1, 4H, 4W]
    args = dict(point_coords=[[900, 600], [1200, 800]], point_labels=[1, 1], mask_input=prior,
                multimask_output=False, return_logits=True)
    want, got = ref.predict(**args), ours.predict(**args)
    for g, w in zip(got, want):
        assert _rel(g, w) <= 1e-3
    # The mask prompt matters: without it the answer differs (so the test can fail).
    without = ours.predict(**{**args, "mask_input": None})
    assert _rel(without[2], want[2]) > 1e-3


def test_onnx_image_predictor_shows_masks_before_the_no_object_fill(image_pair, monkeypatch):
    """ImagePredictor never applies the video path's no-object fill (-1024 where the object
    score is <= 0). The random weights here give positive scores, so fill the filled outputs
    as an absent object would: the predictor must still answer from the raw ones."""
    ref, ours = image_pair
    real_run = ours.graphs.run

    def run(name, **inputs):
        out = real_run(name, **inputs)
        if name == "decoder":
            for key in ("multi_masks", "single_mask"):
                out[key] = np.full_like(out[key], -1024.0)
        return out

    monkeypatch.setattr(ours.graphs, "run", run)
    for multimask in (True, False):
        args = dict(point_coords=[[900, 600]], point_labels=[1], multimask_output=multimask,
                    return_logits=True)
        for g, w in zip(ours.predict(**args), ref.predict(**args)):
            assert _rel(g, w) <= 1e-3


def test_onnx_image_predictor_rejects_bad_prompts(image_pair):
    from masklet_runtime.prompts import PromptError

    _, ours = image_pair
    with pytest.raises(PromptError, match="lies outside"):
        ours.predict([[5000, 10]], [1])
    with pytest.raises(PromptError, match="mask_input must have shape"):
        ours.predict([[10, 10]], [1], mask_input=np.zeros((1, 32, 32)))
    with pytest.raises(PromptError, match="points .* or a box"):
        ours.predict()


_NO_TORCH = textwrap.dedent("""
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "masklet"):
                raise ImportError(f"blocked import of {name} in the torch-free test")
            return None

    sys.meta_path.insert(0, Block())
    import numpy as np
    from masklet_runtime.image import OnnxImagePredictor

    predictor = OnnxImagePredictor(sys.argv[1])
    predictor.set_image(sys.argv[2])
    masks, ious, low = predictor.predict([[900, 600]], [1], return_logits=True)
    np.savez(sys.argv[3], masks=masks, ious=ious, low=low)
    assert not any(m.split(".")[0] in ("torch", "masklet") for m in sys.modules)
""")


def test_onnx_image_predictor_runs_without_torch(tmp_path, image_pair, tiny_export):
    _, ours = image_pair
    _, folder = tiny_export
    out = tmp_path / "out.npz"
    truck = require_data("images", "truck.jpg")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, str(folder), str(truck), str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = np.load(out)
    want = ours.predict([[900, 600]], [1], return_logits=True)
    for key, w in zip(("masks", "ious", "low"), want):
        np.testing.assert_array_equal(saved[key], w)


def test_cli_image_onnx_end_to_end(tmp_path, tiny_export, image_pair):
    _, folder = tiny_export
    ref, _ = image_pair
    truck = require_data("images", "truck.jpg")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["image", str(truck), "-p", "900,600", "--onnx",
                                       str(folder), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["mask_0.png", "mask_1.png", "mask_2.png", "masks.json", "overlay.png"]
    # The best-scored mask is masklet's best-scored mask.
    masks, scores, _ = ref.predict([[900, 600]], [1], multimask_output=True)
    best = masks[np.argmax(scores)]
    written = np.asarray(Image.open(out / "mask_0.png")) > 0
    assert written.shape == best.shape
    assert (written != best).mean() < 1e-4


def _torch_cli_run(model, folder: Path, prompts: list[str], stream: bool, review: Path):
    """masklet's own `masklet video` tracking (VideoPredictor, or the streaming tracker
    with ``stream``) on the CLI's prompts: label maps, and the review CSV written."""
    import torch

    from masklet.cli.prompts import parse_inline
    from masklet.cli.review_csv import ReviewLog
    from masklet.cli.video import _apply, _stream, _track
    from masklet.predictor.video import VideoPredictor

    parsed = [parse_inline(p) for p in prompts]
    log = ReviewLog({(p.frame, p.obj_id) for p in parsed})
    with torch.inference_mode():
        if stream:
            labels = _stream(model, folder, parsed, quiet=True, review=log)[1]
        else:
            predictor = VideoPredictor(model, progress=False)
            state = predictor.init_state(str(folder))
            for p in parsed:
                _apply(predictor, state, p)
            labels = _track(predictor, state, log)
    log.write(review)
    return labels


def _csv_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("stream, prompts", [
    (False, ["1:1:point=400,220", "3:2:box=100,100,400,400", "1:1:point=600,300:0"]),
    (True, ["0:1:point=400,220", "0:2:box=100,100,400,400"]),
], ids=["video-predictor", "stream"])
def test_cli_video_onnx_end_to_end(tmp_path, tiny_export, stream, prompts):
    """`masklet video --onnx` writes what `masklet video` writes (masks, exports, review
    hints): prompts on later frames tracked forwards and backwards, or with --stream
    forwards from frame 0."""
    model, folder = tiny_export
    frames = tmp_path / "bedroom"
    frames.mkdir()
    for i in range(5):
        name = f"{i:05d}.jpg"
        (frames / name).write_bytes(require_data("videos", "bedroom", name).read_bytes())
    out = tmp_path / "out"
    args = [a for p in prompts for a in ("--prompt", p)] + (["--stream"] if stream else [])
    result = CliRunner().invoke(main, ["video", str(frames), *args, "--onnx", str(folder),
                                       "-o", str(out), "-q",
                                       "--review-csv", str(tmp_path / "review.csv")])
    assert result.exit_code == 0, result.output
    assert (out / "overlay.mp4").stat().st_size > 0
    coco = json.loads((out / "masks_coco.json").read_text())
    assert coco["annotations"], "no masks exported"
    want = _torch_cli_run(model, frames, prompts, stream, tmp_path / "want.csv")
    assert sorted(want) == list(range(5))
    for i in range(5):
        got = np.asarray(Image.open(out / "bedroom" / f"{i:05d}.png"))
        assert got.shape == want[i].shape == (540, 960)
        # Both objects on every frame, before their prompted frames too.
        assert set(np.unique(want[i])) == {0, 1, 2}, i
        assert (got != want[i]).mean() < 1e-3, (i, (got != want[i]).mean())
    rows, want_rows = _csv_rows(tmp_path / "review.csv"), _csv_rows(tmp_path / "want.csv")
    # One row per tracked (not prompted) frame and object: 5 x 2 less the prompted ones.
    assert len(rows) == len(want_rows) == 10 - len({p.split(":")[0] + p.split(":")[1]
                                                    for p in prompts})
    for row, ref in zip(rows, want_rows, strict=True):
        assert [row[k] for k in ("frame", "object", "flagged", "motion")] == \
            [ref[k] for k in ("frame", "object", "flagged", "motion")]
        for key in ("object_score", "iou", "area", "score"):
            assert float(row[key]) == pytest.approx(float(ref[key]), rel=1e-3, abs=1e-4), key


def test_cli_video_onnx_prompt_past_the_end_exits_2(tmp_path, tiny_export):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        _png(frames / f"{i:05d}.jpg")
    result = CliRunner().invoke(main, ["video", str(frames), "--prompt", "5:1:point=5,5",
                                       "--onnx", str(tiny_export[1]), "-o", str(tmp_path / "o")])
    _assert_one_line_exit_2(result, "frame index 5 is out of range: the video has 2 frames")
    assert not (tmp_path / "o").exists()
