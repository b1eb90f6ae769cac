"""The HTTP face of the app: FastAPI routes over an `AnnotationService`, and the page.

The routes only translate HTTP to service calls (the README's "Annotation app" section
lists them). Errors are ``{"detail": message}`` with a 4xx status (`AppError`). Blocking
work runs in FastAPI's thread pool (plain `def` routes); only the event stream and
multipart parsing are async.
"""

from __future__ import annotations

import io
import uuid
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.datastructures import UploadFile

from masklet.app import guard
from masklet.app.bodies import (
    SQL_MAX,
    SQL_MIN,
    Body,
    ExportBody,
    FrameObjectBody,
    ObjectBody,
    ObjectPatch,
    OpenBody,
    PathInt,
    PromptBody,
    QueryInt,
    RenameBody,
    TrackBody,
)
from masklet.app.errors import AppError
from masklet.app.labeling_routes import labeling_routes
from masklet.app.review import review_routes
from masklet.app.service import AnnotationService

FORM_SLACK = 64 * 1024  # multipart headers and small fields around the file itself
COPY_CHUNK = 1024 * 1024


# --------------------------------------------------------------------- uploads
def _too_large(limit: int) -> AppError:
    return AppError(413, f"the upload is larger than the server's limit of "
                         f"{limit / 2**20:.3g} MB (--max-upload-mb)")


def _limited(request: Request, limit: int) -> Request:
    """The request with a body that fails with 413 once it passes the file `limit` (bytes)
    plus room for the form around it; a too large Content-Length fails at once."""
    allowed = limit + FORM_SLACK
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > allowed:
        raise _too_large(limit)
    seen = 0

    async def receive():
        nonlocal seen
        message = await request.receive()
        seen += len(message.get("body", b""))
        if seen > allowed:
            raise _too_large(limit)
        return message

    return Request(request.scope, receive)


async def _form(request: Request, limit: int):
    """The multipart form (one file at most); its file is spooled by Starlette."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise AppError(400, "send the file as multipart/form-data")
    return await _limited(request, limit).form(max_files=1, max_fields=8)


def _file_of(form) -> UploadFile:
    file = form.get("file")
    if not isinstance(file, UploadFile):
        raise AppError(400, "the form has no file (field 'file')")
    return file


def _save_upload(file: UploadFile, target: Path, limit: int) -> None:
    """Copy the spooled upload to `target`, refusing it past `limit` bytes (blocking)."""
    size = 0
    file.file.seek(0)
    try:
        with open(target, "wb") as out:
            while chunk := file.file.read(COPY_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                out.write(chunk)
        if size == 0:
            raise AppError(400, "the uploaded file is empty")
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _int_field(form, name: str, required: bool) -> int | None:
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise AppError(400, f"the form needs a '{name}' field")
        return None
    text = str(value).strip()
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is None or not SQL_MIN <= number <= SQL_MAX:
        raise AppError(400, f"'{name}' must be an integer, got {text[:40]!r}")
    return number


def upload_label(file: UploadFile) -> str:
    """The name the user knows an uploaded file by (what error messages call it)."""
    return Path((file.filename or "").replace("\\", "/")).name[:120] or "the upload"


def import_masks_from_png(data: bytes, obj: int | None, label: str = "the file"
                          ) -> dict[int, np.ndarray]:
    """Masks of a PNG: nonzero pixels as `obj`, or (obj None) pixel value = object id.

    `label` names the file in error messages."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise AppError(415, f"{label}: masks are imported from PNG files, "
                                    f"not {image.format}")
            image.load()
            pixels = np.array(image)
            mode = image.mode
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise AppError(415, f"{label}: not a readable PNG image") from None
    if obj is not None:
        mask = pixels.any(axis=-1) if pixels.ndim == 3 else pixels > 0
        if not mask.any():
            raise AppError(400, "the mask is empty (no nonzero pixel)")
        return {obj: mask}
    if pixels.ndim != 2:
        raise AppError(400, f"a {mode} PNG has no object ids: use an indexed or grey PNG, "
                            "or import it for one object")
    ids = [int(v) for v in np.unique(pixels) if v != 0]
    if not ids:
        raise AppError(400, "the mask is empty (no nonzero pixel)")
    if ids[-1] > 255:
        raise AppError(400, f"object ids are 1..255; the PNG holds {ids[-1]}")
    return {i: pixels == i for i in ids}


# ---------------------------------------------------------------------- the app
def create_app(svc: AnnotationService, static_dir: Path | None = None) -> FastAPI:
    """The FastAPI app: the JSON API under /api and the page (static files) at /."""
    app = FastAPI(title="masklet annotator", docs_url="/api/docs", openapi_url="/api/openapi.json",
                  redoc_url=None)
    app.state.service = svc
    guard.install(app, svc.config)

    @app.exception_handler(AppError)
    async def app_error(request: Request, err: AppError) -> JSONResponse:
        return JSONResponse({"detail": err.detail, **err.extra}, status_code=err.status)

    _video_routes(app, svc)
    _edit_routes(app, svc)
    _track_and_export_routes(app, svc)
    labeling_routes(app, svc)  # labels and the brush
    review_routes(app, svc)  # review hints
    static = static_dir or Path(str(resources.files("masklet.app") / "static"))

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        # Browsers ask for /favicon.ico whatever the page links; answer with the page's icon.
        return FileResponse(static / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "public, max-age=86400"})

    app.mount("/", StaticFiles(directory=static, html=True), name="static")
    return app


def _video_routes(app: FastAPI, svc: AnnotationService) -> None:
    @app.get("/api/info")
    def info() -> dict:
        return svc.info()

    @app.get("/api/browse")
    def browse(path: str | None = None) -> dict:
        return svc.browse(path)

    @app.get("/api/videos")
    def videos() -> dict:
        return {"videos": svc.list_videos()}

    @app.post("/api/videos/open", status_code=201)
    def open_path(body: OpenBody) -> dict:
        return svc.open_path(body.path, body.kind, body.name)

    @app.post("/api/videos/upload", status_code=201)
    async def upload(request: Request) -> dict:
        limit = svc.config.max_upload_bytes
        form = await _form(request, limit)
        try:
            file = _file_of(form)
            tmp = svc.data_dir / "tmp" / f"upload-{uuid.uuid4().hex}"
            await run_in_threadpool(_save_upload, file, tmp, limit)
            name = form.get("name")
            name = str(name) if isinstance(name, str) and name.strip() else None
            return await run_in_threadpool(svc.add_upload, tmp, file.filename or "", name)
        finally:
            await form.close()

    @app.get("/api/videos/{video_id}")
    def detail(video_id: PathInt) -> dict:
        return svc.detail(video_id)

    @app.patch("/api/videos/{video_id}")
    def rename(video_id: PathInt, body: RenameBody) -> dict:
        return svc.rename_video(video_id, body.name, body.expected_version)

    @app.delete("/api/videos/{video_id}", status_code=204)
    def delete(video_id: PathInt) -> Response:
        svc.delete_video(video_id, None)
        return Response(status_code=204)

    @app.get("/api/videos/{video_id}/frames/{frame}")
    def frame_jpeg(video_id: PathInt, frame: PathInt) -> Response:
        # A video's frames never change (ids are never reused), so the browser may keep them.
        return Response(svc.frame_jpeg(video_id, frame), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=86400, immutable"})

    @app.post("/api/videos/{video_id}/frames/{frame}/prepare")
    def prepare(video_id: PathInt, frame: PathInt) -> dict:
        return svc.prepare(video_id, frame)

    @app.get("/api/videos/{video_id}/masks/{frame}")
    def mask_png(video_id: PathInt, frame: PathInt) -> Response:
        png, version, _ = svc.mask_png(video_id, frame)
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "no-store", "X-Masklet-Version": str(version)})

    @app.get("/api/videos/{video_id}/masks/{frame}/rle")
    def mask_rle(video_id: PathInt, frame: PathInt) -> dict:
        return svc.mask_json(video_id, frame)

    @app.get("/api/videos/{video_id}/timeline")
    def timeline(video_id: PathInt) -> dict:
        return svc.timeline(video_id)

    @app.get("/api/videos/{video_id}/metrics")
    def metrics(video_id: PathInt) -> dict:
        return svc.metrics(video_id)

    @app.get("/api/videos/{video_id}/events")
    async def events(video_id: PathInt, request: Request) -> StreamingResponse:
        since = svc.hub.last_seq
        hello = await run_in_threadpool(
            lambda: {"version": svc.video_row(video_id)["version"],
                     "job": svc.tracker.current(video_id)})
        return StreamingResponse(
            svc.hub.stream(video_id, hello, since, request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _edit_routes(app: FastAPI, svc: AnnotationService) -> None:
    @app.get("/api/videos/{video_id}/prompts")
    def prompts(video_id: PathInt, frame: QueryInt = None, object: QueryInt = None) -> dict:
        svc.video_row(video_id)
        return svc.prompt_list(video_id, frame, object)

    @app.post("/api/videos/{video_id}/prompts")
    def add_prompt(video_id: PathInt, body: PromptBody) -> dict:
        return svc.prompts.add(video_id, body.frame, body.obj, points=body.points,
                               labels=body.labels, box=body.box,
                               expected_version=body.expected_version)

    @app.post("/api/videos/{video_id}/prompts/clear")
    def clear(video_id: PathInt, body: FrameObjectBody) -> dict:
        return svc.prompts.clear(video_id, body.frame, body.obj, body.expected_version)

    @app.post("/api/videos/{video_id}/undo")
    def undo(video_id: PathInt, body: Body | None = None) -> dict:
        return svc.prompts.undo(video_id, body.expected_version if body else None)

    @app.post("/api/videos/{video_id}/redo")
    def redo(video_id: PathInt, body: Body | None = None) -> dict:
        return svc.prompts.redo(video_id, body.expected_version if body else None)

    @app.post("/api/videos/{video_id}/masks/import")
    async def import_mask(video_id: PathInt, request: Request) -> dict:
        limit = svc.config.max_upload_bytes
        form = await _form(request, limit)
        try:
            file = _file_of(form)
            frame = _int_field(form, "frame", required=True)
            obj = _int_field(form, "object", required=False)
            data = await file.read(limit + 1)
            if len(data) > limit:
                raise _too_large(limit)
        finally:
            await form.close()
        masks = import_masks_from_png(data, obj, upload_label(file))
        return await run_in_threadpool(svc.prompts.import_masks, video_id, frame, masks,
                                       obj is None)

    @app.post("/api/videos/{video_id}/objects", status_code=201)
    def create_object(video_id: PathInt, body: ObjectBody | None = None) -> dict:
        body = body or ObjectBody()
        return svc.create_object(video_id, name=body.name, color=body.color, obj=body.id,
                                 expected_version=body.expected_version)

    @app.patch("/api/videos/{video_id}/objects/{obj}")
    def update_object(video_id: PathInt, obj: PathInt, body: ObjectPatch) -> dict:
        return svc.update_object(video_id, obj, name=body.name, color=body.color,
                                 expected_version=body.expected_version,
                                 set_label="label" in body.model_fields_set, label=body.label)

    @app.delete("/api/videos/{video_id}/objects/{obj}")
    def delete_object(video_id: PathInt, obj: PathInt) -> dict:
        return svc.delete_object(video_id, obj, None)


def _track_and_export_routes(app: FastAPI, svc: AnnotationService) -> None:
    @app.post("/api/videos/{video_id}/track", status_code=202)
    def track(video_id: PathInt, body: TrackBody | None = None) -> dict:
        body = body or TrackBody()
        return svc.tracker.start(video_id, body.direction, body.start, body.max_frames,
                                 body.expected_version, resume=body.resume,
                                 motion=body.motion)

    @app.get("/api/videos/{video_id}/track")
    def track_state(video_id: PathInt) -> dict | None:
        svc.video_row(video_id)
        return svc.tracker.current(video_id)

    @app.post("/api/videos/{video_id}/track/cancel")
    def cancel(video_id: PathInt) -> dict:
        return svc.tracker.cancel(video_id)

    @app.post("/api/videos/{video_id}/exports")
    def export(video_id: PathInt, body: ExportBody) -> dict:
        return svc.exporter.export(video_id, body.format)

    @app.get("/api/videos/{video_id}/exports")
    def exports(video_id: PathInt) -> dict:
        return {"exports": svc.exporter.listing(video_id)}

    @app.get("/api/videos/{video_id}/exports/{name}")
    def export_file(video_id: PathInt, name: str) -> FileResponse:
        return FileResponse(svc.exporter.file(video_id, name), filename=name)
