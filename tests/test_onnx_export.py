"""ONNX export: every graph passes the checker, runs in onnxruntime and equals masklet.

The default suite exports sam2.1_hiera_tiny at 256 px (random weights) once and runs each
graph at several sizes of its dynamic axes; the torch side is the graph's wrapper module,
which the torch-level tests below tie to masklet's own tracking functions. Other presets
(nano, the official sizes, EdgeTAM) are exported in the slow suite.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from masklet import build_model, get_config
from masklet.cli import main
from masklet.modeling.rope import apply_axial_rope, apply_axial_rope_traced, rope_tables
from masklet.modeling.sam2 import ImageFeatures, SAM2Model
from masklet.modeling.split_rope import SplitGridRoPEAttention
from masklet.onnx import DEFAULT_OPSET, GRAPH_NAMES, export_model, graph_specs
from masklet.onnx import exporter as exporter_module
from masklet.onnx.manifest import FORMAT_VERSION, sha256_of
from masklet.onnx.spec import TRACE_DIMS
from masklet.tracking.memory_bank import MemoryInputs
from masklet.tracking.step import attend_memory, encode_memory
from masklet_runtime.graphs import FORMAT_VERSIONS

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOL = 1e-4  # max |onnx - torch| / max |torch|, per output

# Sizes of the dynamic axes each graph is run at: objects B, points N, spatial memory
# frames and pointer tokens P, mask side R (x H) and the 0/1 switches.
RUN_DIMS = [
    dict(B=1, N=1, M_FRAMES=1, P=0, R=4, MASK=0, FROM_PTS=1),
    dict(B=2, N=3, M_FRAMES=3, P=4, R=16, MASK=1, FROM_PTS=0),
    dict(B=3, N=2, M_FRAMES=1, P=16, R=4, MASK=1, FROM_PTS=1),
    dict(B=1, N=5, M_FRAMES=3, P=0, R=16, MASK=0, FROM_PTS=0),
]


# One intra-op thread (conftest): on a busy 2-core machine two threads contend.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _seeded(preset: str, image_size: int | None = None):
    torch.manual_seed(0)
    config = get_config(preset)
    if image_size is not None:
        config = config.with_image_size(image_size)
    return build_model(config, random_weights=True)


def scale_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref| (1e-12 floor)."""
    assert ours.shape == ref.shape, f"shape {ours.shape} != {ref.shape}"
    ref = ref.astype(np.float64)
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12))


def _session(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_graph_parity(spec, session, dims: dict) -> None:
    """The exported graph and its torch module agree on the same random inputs."""
    inputs = spec.make_inputs(dims, torch.Generator().manual_seed(7))
    feed = {t.name: x.numpy() for t, x in zip(spec.inputs, inputs)}
    outs = session.run([t.name for t in spec.outputs], feed)
    with torch.no_grad():
        ref = spec.module(*inputs)
    ref = (ref,) if isinstance(ref, torch.Tensor) else ref
    for t, ours, expected in zip(spec.outputs, outs, ref):
        expected = expected.numpy()
        if t.dtype == "int64":
            np.testing.assert_array_equal(ours, expected, err_msg=t.name)
        else:
            assert scale_err(ours, expected) < TOL, f"{spec.name}.{t.name} at {dims}"


class Export:
    """An export folder with its model, specs and lazily opened sessions."""

    def __init__(self, model, folder: Path) -> None:
        self.model, self.folder = model, folder
        self.manifest = json.loads((folder / "manifest.json").read_text())
        self.specs = {s.name: s for s in graph_specs(model)}
        self._sessions: dict = {}

    def session(self, name: str):
        if name not in self._sessions:
            self._sessions[name] = _session(self.folder / f"{name}.onnx")
        return self._sessions[name]


@pytest.fixture(scope="module")
def tiny_export(tiny256_onnx) -> Export:
    # The run's one tiny/256 export (conftest), shared with the runtime tests: an export
    # takes a minute or more here.
    return Export(*tiny256_onnx)


# ---------------------------------------------------------------- exported graphs
@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_graph_passes_checker(tiny_export, name):
    onnx.checker.check_model(str(tiny_export.folder / f"{name}.onnx"), full_check=True)


@pytest.mark.parametrize("dims", RUN_DIMS, ids=lambda d: "B{B}-N{N}-F{M_FRAMES}-P{P}".format(**d))
@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_graph_equals_torch(tiny_export, name, dims):
    check_graph_parity(tiny_export.specs[name], tiny_export.session(name), dims)


def test_axes_are_dynamic_in_the_graphs(tiny_export):
    """The symbolic axes of the contract are symbolic in the ONNX files, the rest fixed."""
    for name, entry in tiny_export.manifest["graphs"].items():
        session = tiny_export.session(name)
        actual = {i.name: i.shape for i in session.get_inputs()}
        for spec in entry["inputs"]:
            for ours, declared in zip(actual[spec["name"]], spec["shape"]):
                assert isinstance(ours, str) == isinstance(declared, str), (name, spec)
                if isinstance(declared, int):
                    assert ours == declared, (name, spec)


def test_manifest_describes_the_files(tiny_export):
    m, folder, model = tiny_export.manifest, tiny_export.folder, tiny_export.model
    assert (m["format"], m["preset"]) == ("masklet-onnx", "sam2.1_hiera_tiny")
    assert m["format_version"] == FORMAT_VERSION and FORMAT_VERSION in FORMAT_VERSIONS
    assert m["opset"] == DEFAULT_OPSET == 21 and m["masklet_version"]
    assert set(m["graphs"]) == set(GRAPH_NAMES)
    kinds = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64"}
    for name, entry in m["graphs"].items():
        path = folder / entry["file"]
        assert sha256_of(path) == entry["sha256"]
        graph = onnx.load(str(path)).graph
        for key, actual in (("inputs", graph.input), ("outputs", graph.output)):
            listed = [(t["name"], t["dtype"], len(t["shape"])) for t in entry[key]]
            found = [(v.name, kinds[v.type.tensor_type.elem_type],
                      len(v.type.tensor_type.shape.dim)) for v in actual]
            assert listed == found, (name, key)
    assert sha256_of(folder / "constants.npz") == m["constants"]["sha256"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{n}.onnx" for n in GRAPH_NAMES] + ["constants.npz", "manifest.json"])
    s = m["settings"]
    assert (s["image_size"], s["feat_size"], s["hidden_dim"], s["mem_dim"]) == (256, 16, 256, 64)
    assert s["memory_tokens_per_frame"] == 256 and s["low_res_size"] == 64
    assert s["num_maskmem"] == model.num_maskmem
    assert s["multimask_max_pt_num"] == model.config.multimask_max_pt_num
    assert s["image_mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_constants_are_the_models(tiny_export):
    model = tiny_export.model
    with np.load(tiny_export.folder / "constants.npz") as consts:
        got = dict(consts)
    c, mem = model.hidden_dim, model.mem_dim
    want = {
        "no_mem_embed": model.no_mem_embed.reshape(c),
        "no_mem_pos_enc": model.no_mem_pos_enc.reshape(c),
        "maskmem_tpos_enc": model.maskmem_tpos_enc.reshape(model.num_maskmem, mem),
        "maskmem_pos_enc": model.maskmem_pos_enc(model.device).flatten(2)[0].T,
        "obj_ptr_tpos_proj_weight": model.obj_ptr_tpos_proj.weight,
        "obj_ptr_tpos_proj_bias": model.obj_ptr_tpos_proj.bias,
    }
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].dtype == np.float32
        np.testing.assert_array_equal(got[key], value.detach().numpy(), err_msg=key)
    assert got["maskmem_pos_enc"].shape == (256, mem)


# ---------------------------------------------------------------- wrappers vs masklet
@pytest.fixture(scope="module")
def tiny256():
    return _seeded("sam2.1_hiera_tiny", 256)


def _specs(model):
    return {s.name: s for s in graph_specs(model)}


@pytest.mark.parametrize("num_ptrs", [0, 4])
def test_memory_attention_wrapper_is_attend_memory(tiny256, num_ptrs):
    """The tensor pointer count (traced rotary path) gives masklet's int-count result."""
    spec = _specs(tiny256)["memory_attention"]
    dims = dict(B=2, M_FRAMES=2, P=num_ptrs)
    curr, curr_pos, memory, memory_pos, count = spec.make_inputs(dims, torch.Generator())
    assert curr.shape[1] == 1 and memory.shape[1] == 2  # the frame once for both objects
    feats = ImageFeatures(curr.permute(1, 2, 0).reshape(1, 256, 16, 16), [],
                          curr_pos.permute(1, 2, 0).reshape(1, 256, 16, 16))
    with torch.no_grad():
        ours = spec.module(curr, curr_pos, memory, memory_pos, count)
        ref = attend_memory(tiny256, feats, MemoryInputs(memory, memory_pos, num_ptrs))
    assert scale_err(ours.numpy(), ref.numpy()) < 1e-5


def test_traced_rope_equals_rope():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 12, 8, generator=gen), torch.randn(2, 1, 3 * 12 + 5, 8, generator=gen)
    cos, sin = rope_tables(3, 4, 8, 10000.0, torch.device("cpu"), torch.float32)
    for exclude in (0, 5):
        keys = k[..., : k.shape[-2] - 5 + exclude, :]
        q1, k1 = apply_axial_rope(q, keys, cos, sin, repeat_k=True, num_k_exclude=exclude)
        q2, k2 = apply_axial_rope_traced(q, keys, cos, sin, torch.tensor(exclude))
        torch.testing.assert_close(q2, q1, rtol=0, atol=1e-6)
        torch.testing.assert_close(k2, k1, rtol=0, atol=1e-6)
        if exclude:
            assert torch.equal(k2[..., -exclude:, :], keys[..., -exclude:, :])


def test_traced_split_grid_rope_equals_split_grid_rope():
    """EdgeTAM's key rotation: global latents and pointers unrotated, 2D latents by grid."""
    attn = SplitGridRoPEAttention(k_sizes=(2, 2), k_tokens_per_frame=7, embedding_dim=8,
                                  num_heads=1, feat_sizes=(4, 4))
    k = torch.randn(2, 1, 3 * 7 + 4, 8, generator=torch.Generator().manual_seed(1))
    for exclude in (0, 4):
        keys = k[..., : k.shape[-2] - 4 + exclude, :]
        ref = attn.rotate_keys(keys, exclude)
        ours = attn.rotate_keys(keys, torch.tensor(exclude))
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
        assert not torch.equal(ref, keys)


@pytest.mark.parametrize("has_mask", [0, 1])
def test_decoder_wrapper_is_forward_sam_heads(tiny256, has_mask):
    spec = _specs(tiny256)["decoder"]
    inputs = spec.make_inputs(dict(B=2, N=3, MASK=has_mask), torch.Generator().manual_seed(3))
    embed, h0, h1, coords, labels, mask, _ = inputs
    with torch.no_grad():
        ours = spec.module(*inputs)
        kwargs = dict(points=(coords, labels), mask_inputs=mask if has_mask else None)
        multi = tiny256.forward_sam_heads(embed, [h0, h1], multimask_output=True, **kwargs)
        single = tiny256.forward_sam_heads(embed, [h0, h1], multimask_output=False, **kwargs)
    best = multi.ious.argmax(-1)
    with torch.no_grad():  # the raw decoder masks, as ImagePredictor.predict_torch has them
        sparse, dense = tiny256.sam_prompt_encoder(points=(coords, labels), boxes=None,
                                                   masks=mask if has_mask else None)
        raw = [tiny256.sam_mask_decoder(
            image_embeddings=embed, image_pe=tiny256.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=multimask, repeat_image=False, high_res_features=[h0, h1]).masks
            for multimask in (True, False)]
    want = (multi.low_res_multimasks, multi.ious, best, multi.obj_ptr, single.low_res_masks,
            single.ious, single.obj_ptr, single.object_score_logits, *raw)
    assert len(ours) == len(want) == len(spec.outputs)
    # One transformer pass for both outputs: the single mask's hypernetwork product is
    # part of a 4-token matmul there, so its last bits may differ from a 1-token one.
    for got, ref in zip(ours, want):
        if got.dtype == torch.int64:
            assert torch.equal(got, ref)
        else:
            assert scale_err(got.numpy(), ref.numpy()) < 1e-6
    rows = torch.arange(2)
    assert scale_err(ours[0][rows, best].unsqueeze(1).numpy(), multi.low_res_masks.numpy()) < 1e-6


@pytest.mark.parametrize("from_pts", [0, 1])
def test_memory_encoder_wrapper_is_encode_memory(tiny256, from_pts):
    """Low-res logits are upsampled as masklet upsamples them; S x S logits go in as is."""
    spec = _specs(tiny256)["memory_encoder"]
    for side in (4, 16):
        embed, logits, scores, flag = spec.make_inputs(
            dict(B=2, R=side, FROM_PTS=from_pts), torch.Generator().manual_seed(5))
        high = torch.nn.functional.interpolate(logits, size=(256, 256), mode="bilinear",
                                               align_corners=False)
        if side == 16:
            assert torch.equal(high, logits)  # the resize is the identity at S
        feats = ImageFeatures(embed, [], embed)
        with torch.no_grad():
            ours = spec.module(embed, logits, scores, flag)
            ref = encode_memory(tiny256, feats, high, scores, bool(from_pts), dtype=None)
        assert torch.equal(ours, ref.flatten(2).transpose(1, 2))


# ---------------------------------------------------------------- atomic writes
def test_failed_export_leaves_nothing(tmp_path, tiny256, monkeypatch):
    """An export interrupted after its first graph leaves neither DIR nor a temp folder."""
    calls = []

    def fake_export(spec, folder, opset):
        calls.append(spec.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        (folder / spec.file_name).write_bytes(b"partial")
        return {}

    monkeypatch.setattr(exporter_module, "_export_graph", fake_export)
    with pytest.raises(KeyboardInterrupt):
        export_model(tiny256, tmp_path / "out")
    assert calls == list(GRAPH_NAMES[:2])
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_is_kept_without_overwrite(tmp_path, tiny256):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        export_model(tiny256, out)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (out / "keep.txt").read_text() == "x"


def test_overwrite_replaces_the_folder(tmp_path, tiny256, monkeypatch):
    def fake_export(spec, folder, opset):
        (folder / spec.file_name).write_bytes(spec.name.encode())
        return spec.manifest_entry(sha256_of(folder / spec.file_name))

    monkeypatch.setattr(exporter_module, "_export_graph", fake_export)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    export_model(tiny256, out, overwrite=True)
    assert not (out / "old.txt").exists() and (out / "manifest.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("opset", [17, 24])
def test_unsupported_opset_is_refused(tmp_path, tiny256, opset):
    with pytest.raises(ValueError, match="18 to 23"):
        export_model(tiny256, tmp_path / "out", opset=opset)


# ---------------------------------------------------------------- CLI
def _cli(*args):
    return CliRunner().invoke(main, ["export", *args])


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("masklet: error:"), result.output
    return lines[0]


def test_cli_refuses_a_preset_without_weights(tmp_path):
    line = _one_line_error(_cli("--model", "sam2.1_hiera_tiny", "-o", str(tmp_path / "o")))
    assert "--checkpoint" in line and "--random-weights" in line
    line = _one_line_error(_cli("-o", str(tmp_path / "o")))
    assert "--model" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("opset", ["17", "24"])
def test_cli_refuses_an_unsupported_opset(tmp_path, opset):
    line = _one_line_error(_cli("--model", "tiny", "--random-weights", "-o",
                                str(tmp_path / "o"), "--opset", opset))
    assert "18 to 23" in line


def test_cli_refuses_an_existing_folder(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "f").write_text("x")
    line = _one_line_error(_cli("--model", "tiny", "--random-weights", "-o", str(tmp_path / "o")))
    assert "--overwrite" in line


def test_cli_exports_through_export_model(tmp_path, monkeypatch):
    """The command passes the model and options on (the export itself is tested above)."""
    seen = {}

    def fake_export_model(model, out_dir, *, opset, overwrite, progress):
        seen.update(preset=model.config.name, out=out_dir, opset=opset, overwrite=overwrite)

    monkeypatch.setattr("masklet.onnx.export_model", fake_export_model)
    result = _cli("--model", "masklet_nano", "-o", str(tmp_path / "o"), "--opset", "20", "-q")
    assert result.exit_code == 0, result.output
    assert seen == dict(preset="masklet_nano", out=tmp_path / "o", opset=20, overwrite=False)


# ---------------------------------------------------------------- other presets (slow)
SLOW_PRESETS = [
    ("masklet_nano", None),
    ("sam2_hiera_tiny", 256),
    ("sam2.1_hiera_small", 256),
    ("sam2.1_hiera_base_plus", 256),
    ("sam2.1_hiera_large", 256),
    ("edgetam", 256),
]
# The larger SAM 2.1 presets differ from sam2.1_hiera_tiny (exported whole in the default
# suite) in the Hiera trunk only, so only their image encoder is exported here: the other
# four graphs would trace the same modules with the same shapes, at about a minute each.
TRUNK_ONLY = {"sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large"}


def _shapes_outside_image_encoder(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()
            if not k.startswith("image_encoder.")}


@pytest.mark.slow
@pytest.mark.parametrize("preset,size", SLOW_PRESETS, ids=[p for p, _ in SLOW_PRESETS])
def test_preset_exports_and_matches(tmp_path, preset, size, request):
    graphs = GRAPH_NAMES
    if preset == "edgetam":  # exported once for this test and the ONNX tracker's
        model, folder = request.getfixturevalue("edgetam256_onnx")
    else:
        model, folder = _seeded(preset, size), tmp_path / "x"
    if preset in TRUNK_ONLY:
        tiny = get_config("sam2.1_hiera_tiny").with_image_size(size)
        assert dataclasses.replace(model.config, name=tiny.name, trunk=tiny.trunk) == tiny
        with torch.device("meta"):
            tiny_shapes = _shapes_outside_image_encoder(SAM2Model(tiny))
        assert _shapes_outside_image_encoder(model) == tiny_shapes
        graphs = ("image_encoder",)
    if preset != "edgetam":
        export_model(model, folder, graphs=graphs)
    exported = Export(model, folder)
    assert sorted(exported.manifest["graphs"]) == sorted(graphs)
    for name in graphs:
        onnx.checker.check_model(str(folder / f"{name}.onnx"), full_check=True)
        for dims in (TRACE_DIMS | dict(B=1, M_FRAMES=1, P=0), RUN_DIMS[1]):
            check_graph_parity(exported.specs[name], exported.session(name), dims)
