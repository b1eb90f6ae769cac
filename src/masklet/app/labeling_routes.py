"""HTTP routes of the label set and of the brush (registered by `server.create_app`).

Like the other routes they only translate HTTP to service calls: `LabelBook`
(app/labels.py) for the labels, `BrushEditor` (app/brush.py) for strokes.
"""

from __future__ import annotations

from fastapi import FastAPI, Response

from masklet.app.bodies import BrushBody, LabelBody, LabelPatch, PathInt
from masklet.app.labels import list_labels
from masklet.app.service import AnnotationService


def labeling_routes(app: FastAPI, svc: AnnotationService) -> None:
    @app.get("/api/labels")
    def labels() -> dict:
        return {"labels": list_labels(svc.db)}

    @app.post("/api/labels", status_code=201)
    def create_label(body: LabelBody) -> dict:
        return svc.labels.create(body.name, body.color, body.yolo_id)

    @app.patch("/api/labels/{label_id}")
    def update_label(label_id: PathInt, body: LabelPatch) -> dict:
        changes = {key: getattr(body, key) for key in body.model_fields_set}
        return svc.labels.update(label_id, changes)

    @app.delete("/api/labels/{label_id}", status_code=204)
    def delete_label(label_id: PathInt) -> Response:
        svc.labels.delete(label_id)
        return Response(status_code=204)

    @app.post("/api/videos/{video_id}/brush")
    def brush(video_id: PathInt, body: BrushBody) -> dict:
        return svc.brush.stroke(video_id, body.frame, body.obj, body.mode, body.radius,
                                body.points, body.expected_version)
