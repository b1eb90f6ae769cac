"""`masklet serve`: a local annotation app (the SAM 2 data-engine loop in a browser).

A FastAPI server (`server.create_app`) over an `AnnotationService` (`service`) that keeps
every prompt and every finished mask in an SQLite file as it is made; the page lives
in ``static/``. Needs the ``app`` extra (fastapi, uvicorn, python-multipart).
"""

from masklet.app.service import AnnotationService, AppConfig

__all__ = ["AnnotationService", "AppConfig"]
