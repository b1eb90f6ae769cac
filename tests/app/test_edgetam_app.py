"""The annotation app with the `edgetam` preset (`masklet serve --model edgetam
--random-weights`, here at EdgeTAM's smallest size, 256 px): open the bundled demo clip,
click, track, export, over the API."""

from __future__ import annotations

import io
import json
import shutil
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_objects_present

from masklet.app.service import AnnotationService, AppConfig
from masklet.build import build_model
from masklet.bundled import demo_clip
from masklet.config import get_config

from .conftest import app_client, wait_job
from .test_api import label_map

SIZE = 256
TRACKED = 3  # frames tracked after the prompted one


@pytest.fixture(scope="module")
def edgetam():
    torch.manual_seed(0)
    model = build_model(get_config("edgetam").with_image_size(SIZE), random_weights=True)
    make_objects_present(model)
    return model


@pytest.fixture
def client(tmp_path, edgetam):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(demo_clip(), root / "bedroom.mp4")
    # What `masklet serve --model edgetam --random-weights` configures.
    svc = AnnotationService(AppConfig(data_dir=tmp_path / "data", roots=[root],
                                      model_name="edgetam (random weights)"), edgetam)
    yield app_client(svc)
    svc.close()


def test_click_track_and_export_with_edgetam(client):
    info = client.get("/api/info").json()
    assert info["image_size"] == SIZE and "edgetam" in json.dumps(info)
    video = client.post("/api/videos/open", json={"path": "bedroom.mp4"})
    assert video.status_code == 201, video.text
    vid = video.json()["id"]
    assert video.json()["num_frames"] == 30
    assert client.post(f"/api/videos/{vid}/objects", json={}).status_code == 201
    click = client.post(f"/api/videos/{vid}/prompts",
                        json={"frame": 0, "object": 1, "points": [[200, 140]], "labels": [1]})
    assert click.status_code == 200, click.text
    assert (label_map(client, vid, 0) == 1).any()

    start = client.post(f"/api/videos/{vid}/track",
                        json={"direction": "forward", "max_frames": TRACKED})
    assert start.status_code == 202, start.text
    job = wait_job(client, vid)
    assert job["state"] == "done", job
    for frame in range(1, TRACKED + 1):
        assert (label_map(client, vid, frame) == 1).any(), frame
    assert not label_map(client, vid, TRACKED + 1).any()  # the job stopped where asked

    made = client.post(f"/api/videos/{vid}/exports", json={"format": "davis"})
    assert made.status_code == 200, made.text
    body = client.get(made.json()["url"])
    assert body.status_code == 200
    with zipfile.ZipFile(io.BytesIO(body.content)) as archive:
        pngs = sorted(n for n in archive.namelist() if n.endswith(".png"))
        assert len(pngs) >= TRACKED + 1
        first = np.array(Image.open(io.BytesIO(archive.read(pngs[0]))))
    np.testing.assert_array_equal(first, label_map(client, vid, 0))
