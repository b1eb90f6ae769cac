"""The one exception the app's services raise for anything the user should be told."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """A 4xx answer: HTTP status, a one-line message and optional extra JSON fields.

    The server turns it into ``{"detail": message, **extra}`` with that status.
    """

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


def not_found(what: str) -> AppError:
    return AppError(404, what)


def conflict(detail: str, **extra: Any) -> AppError:
    return AppError(409, detail, **extra)


def bad_request(detail: str) -> AppError:
    return AppError(400, detail)
