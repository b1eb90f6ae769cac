"""The JSON bodies and the integer types of the API, bounded where they are parsed.

Every integer the API takes (path ids, frame numbers, body and query fields) is checked
against SQLite's INTEGER range here: a larger one would reach the database and fail there
as an OverflowError (a 500). Out of range is a 422 from the validation handler; in range
but unknown stays the route's 404. JSON booleans are not integers (``true`` is not object
1), and floats must be finite (`allow_inf_nan=False`): NaN and Infinity are refused at
parsing, before any service code sees them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

SQL_MIN = -(2**63)
SQL_MAX = 2**63 - 1


def _not_bool(value: object) -> object:
    # bool is a subclass of int: without this, pydantic's lax mode reads true as 1.
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    return value


# A body or query integer that fits SQLite's INTEGER.
SqlInt = Annotated[int, BeforeValidator(_not_bool), Field(ge=SQL_MIN, le=SQL_MAX)]
# A click label: a JSON integer (strict: neither true nor "1" nor 1.0); the service
# checks that it is 0 or 1.
Label = Annotated[int, Field(strict=True)]
# Path parameters (video, frame and object ids) and the optional query filters.
PathInt = Annotated[int, Path(ge=SQL_MIN, le=SQL_MAX)]
QueryInt = Annotated[int | None, Query(ge=SQL_MIN, le=SQL_MAX)]


class Strict(BaseModel):
    """A body with no unknown fields and no NaN or Infinity."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class Body(Strict):
    expected_version: SqlInt | None = None


class OpenBody(Strict):
    path: str
    kind: Literal["video", "images"] | None = None
    name: str | None = None


class RenameBody(Body):
    name: str


class PromptBody(Body):
    frame: SqlInt
    obj: SqlInt = Field(alias="object")
    points: list[list[float]] | None = None
    labels: list[Label] | None = None
    box: list[float] | None = None


class FrameObjectBody(Body):
    frame: SqlInt
    obj: SqlInt = Field(alias="object")


class ObjectBody(Body):
    name: str | None = None
    color: str | None = None
    id: SqlInt | None = None


class ObjectPatch(Body):
    name: str | None = None
    color: str | None = None
    # A label id, or null to unlabel; left out: unchanged (told apart by model_fields_set).
    label: SqlInt | None = None


class LabelBody(Strict):
    name: str
    color: str | None = None
    yolo_id: SqlInt | None = None


class LabelPatch(Strict):
    # Fields left out stay as they are; "yolo_id": null clears the YOLO id.
    name: str | None = None
    color: str | None = None
    yolo_id: SqlInt | None = None


class BrushBody(Body):
    frame: SqlInt
    obj: SqlInt = Field(alias="object")
    mode: Literal["paint", "erase"]
    radius: float
    points: list[list[float]]


class ReviewSeenBody(Strict):
    frame: SqlInt
    obj: SqlInt | None = Field(None, alias="object")  # null: every object on the frame


class TrackBody(Body):
    direction: Literal["both", "forward", "backward"] = "both"
    start: SqlInt | None = None
    max_frames: SqlInt | None = None
    # None: resume the last job when it was cut off and this request would redo it;
    # False: track every frame again.
    resume: StrictBool | None = None
    # Motion-aware tracking (SAMURAI, `masklet.MotionConfig` defaults). Strict: a JSON
    # true / false only, never "yes" or 1.
    motion: StrictBool = False


class ExportBody(Strict):
    format: str
