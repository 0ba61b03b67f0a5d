"""The line's HTTP API (FastAPI): send an image of a part, get the engine's verdict and the part's decision.

    POST /v1/inspect         one image (multipart `image`) with part_id, station, camera, captured_at[, line]
    POST /v1/inspect/batch   several images (`images`) with `captures`, a JSON list of those fields per image
    GET  /v1/engines         the engine serving and the engines the catalog knows
    GET  /healthz            engine, catalog reachability, spooled events, batching figures
    GET  /docs, /openapi.json
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from catalog.events import RejectReason
from serving.engines import list_engines
from serving.inspection import Capture, ImageRefused
from serving.recorder import is_unreachable
from serving.service import InspectionService

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]

# Which HTTP status tells the line what went wrong with the bytes it sent.
_STATUS = {
    RejectReason.NOT_AN_IMAGE: 415,
    RejectReason.TOO_LARGE: 413,
}


class CaptureFields(BaseModel):
    """The fields that come with every image."""

    model_config = ConfigDict(extra="forbid")
    part_id: Name
    station: Name
    camera: Name
    captured_at: AwareDatetime = Field(description="ISO 8601 with a UTC offset, e.g. 2026-03-02T08:15:00+00:00")
    line: Name | None = None


def create_app(service: InspectionService) -> FastAPI:
    """The API over a constructed (not yet started) service; the app starts and stops it."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="visionledger inspection API",
        version="1",
        description="Per-image defect scores and part decisions from a verified engine; every result is "
        "recorded as an event (spooled on local disk while the catalog is unreachable).",
        lifespan=lifespan,
    )

    def capture_of(fields: CaptureFields) -> Capture:
        return Capture(
            part_id=fields.part_id, line=fields.line or service.config.line, station=fields.station,
            camera=fields.camera, captured_at=fields.captured_at,
        )

    async def read_limited(upload: UploadFile) -> bytes:
        limit = service.config.max_image_bytes
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"image {upload.filename!r} is larger than the limit of {limit:,} bytes")
        return data

    async def inspect_one(data: bytes, fields: CaptureFields) -> dict[str, Any]:
        inspection, destination = await service.inspect(data, capture_of(fields))
        return inspection.to_json() | {"recorded_in": destination}

    def refused(exc: ImageRefused) -> HTTPException:
        r = exc.rejected
        return HTTPException(_STATUS.get(r.reason, 422), {"reason": r.reason.value, "detail": r.detail})

    @app.post("/v1/inspect", summary="Inspect one image of a part")
    async def inspect(
        image: Annotated[UploadFile, File(description="the image: PNG, JPEG, TIFF or BMP, gray or colour")],
        part_id: Annotated[str, Form()],
        station: Annotated[str, Form()],
        camera: Annotated[str, Form()],
        captured_at: Annotated[datetime, Form(description="ISO 8601 with a UTC offset")],
        line: Annotated[str | None, Form()] = None,
    ) -> dict[str, Any]:
        fields = _fields({"part_id": part_id, "station": station, "camera": camera, "captured_at": captured_at,
                          "line": line})
        try:
            return await inspect_one(await read_limited(image), fields)
        except ImageRefused as exc:
            raise refused(exc) from None

    @app.post("/v1/inspect/batch", summary="Inspect several images")
    async def inspect_batch(
        images: Annotated[list[UploadFile], File(description="the images, in the order of `captures`")],
        captures: Annotated[str, Form(description="JSON list of {part_id, station, camera, captured_at, line?}")],
    ) -> dict[str, Any]:
        try:
            items = json.loads(captures)
        except json.JSONDecodeError as exc:
            raise HTTPException(422, f"captures is not JSON: {exc}") from None
        except RecursionError:  # a nesting bomb: no capture list is nested more than two deep
            raise HTTPException(422, "captures is nested too deeply: send a flat JSON list of objects") from None
        if not isinstance(items, list) or len(items) != len(images):
            raise HTTPException(
                422, f"captures must be a JSON list with one entry per image ({len(images)} images sent)"
            )
        fields = [_fields(item, index=i) if isinstance(item, dict) else _not_object(i) for i, item in enumerate(items)]
        results = []
        for upload, f in zip(images, fields, strict=True):
            try:
                results.append(await inspect_one(await read_limited(upload), f))
            except ImageRefused as exc:
                error = refused(exc)
                results.append({"part_id": f.part_id, "camera": f.camera, "status": error.status_code,
                                "error": error.detail})
        return {"results": results}

    @app.get("/v1/engines", summary="The engine serving, and every engine the catalog knows")
    async def engines() -> dict[str, Any]:
        in_service = asdict(service.engine.record)
        try:
            known = [asdict(e) for e in list_engines(service.cat)]
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            known = None  # the catalog is away: the line still needs to know what is serving it
        return {"serving": in_service, "engines": known}

    @app.get("/healthz", summary="Liveness and the state of the event path")
    async def healthz() -> JSONResponse:
        return JSONResponse(service.health())

    return app


def _fields(values: dict[str, Any], *, index: int | None = None) -> CaptureFields:
    # The values arrive as one dict, not as keywords: a client's key must never meet this function's own arguments.
    try:
        return CaptureFields(**values)
    except ValidationError as exc:
        where = f"captures[{index}]: " if index is not None else ""
        problems = "; ".join(f"{where}{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise HTTPException(422, problems) from None


def _not_object(index: int) -> CaptureFields:
    raise HTTPException(422, f"captures[{index}] must be an object of part_id, station, camera, captured_at")
