"""The line's HTTP API (FastAPI): send an image of a part, get the engine's verdict and the part's decision.

    POST /v1/inspect         one image (multipart `image`) with part_id, station, camera, captured_at[, line]
    POST /v1/inspect/batch   several images (`images`) with `captures`, a JSON list of those fields per image
    GET  /v1/engines         the engine serving and the engines the catalog knows
    GET  /v1/status          engine, catalog reachability, spooled events, batching figures
    GET  /healthz            "ok" or "degraded", and nothing else: it is open to anyone
    GET  /docs, /openapi.json   only when asked for (`visionledger serve --docs`)

Every client address has a request rate limit (429). Everything but /healthz (and the docs, when asked for)
needs a station's token (`Authorization: Bearer vl_…`, `identity.stations`): a missing, malformed, unknown,
expired or revoked one is answered 401, a capture outside its line, station or cameras 403, and nothing is
recorded for either. Then, refused before anything is stored: a field with a control character or over 200
characters, or a captured_at outside ServeConfig's window around the server's receive time (422, nothing
recorded); a body above max_request_bytes, an image above max_image_bytes or max_pixels (413, quarantined as
ImageRejected).
"""

from __future__ import annotations

import json
import math
import time
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse
from limits import parse as parse_rate_limit
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from catalog import events
from catalog.events import RejectReason
from identity.stations import Refusal, StationPrincipal
from imaging.intake import Rejected
from serving.engines import list_engines
from serving.inspection import ACTOR, Caller, Capture, ImageRefused
from serving.recorder import is_unreachable
from serving.service import InspectionService


def _printable(value: str) -> str:
    # Control, format and unassigned characters (NUL among them) have no place in a name, and some cannot be
    # stored at all: refused here, they never reach the spool or the log.
    bad = next((c for c in value if unicodedata.category(c).startswith("C")), None)
    if bad is not None:
        raise ValueError(f"contains the control character U+{ord(bad):04X} at position {value.index(bad)}")
    return value


Name = Annotated[events.Name, AfterValidator(_printable)]  # the catalog's name, printable

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

    @field_validator("captured_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        # Stored in UTC: a time at the calendar's edge whose offset takes it past year 1 or 9999 has no UTC form.
        try:
            return value.astimezone(UTC).astimezone(value.tzinfo)
        except OverflowError:
            raise ValueError(f"{value.isoformat()} lies outside the years 1 to 9999 in UTC") from None


class Gate:
    """What every request passes before the app reads its body: the per-client rate limit (429), and a station's
    valid token (401) on every path but the ``open_paths`` (closed by default: a path spelt in a way the router
    does not know still needs a token). A passed request carries its `Caller` in its scope."""

    def __init__(self, app: ASGIApp, *, service: InspectionService, authenticate: bool, open_paths: frozenset[str]):
        self.app = app
        self.service = service
        self.authenticate = authenticate
        self.open_paths = open_paths
        rate = service.config.rate_limit
        self.limit = parse_rate_limit(rate) if rate else None
        self.limiter = MovingWindowRateLimiter(MemoryStorage()) if rate else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        received_at = datetime.now(UTC)
        client_addr = scope["client"][0] if scope.get("client") else "unknown"
        if self.limiter is not None and not self.limiter.hit(self.limit, client_addr):
            reset_at = self.limiter.get_window_stats(self.limit, client_addr).reset_time
            retry = max(1, math.ceil(reset_at - time.time()))
            response = JSONResponse({"detail": "too many requests from this client"}, 429,
                                    headers={"Retry-After": str(retry)})
            return await response(scope, receive, send)
        station = None
        if self.authenticate and scope["path"] not in self.open_paths:
            station = self.service.tokens.verify(_bearer(Headers(scope=scope).get("authorization")), received_at)
            if isinstance(station, Refusal):
                # RFC 6750: an absent credential gets the bare challenge, a bad one says it is invalid.
                challenge = "Bearer" if station is Refusal.MISSING else 'Bearer error="invalid_token"'
                response = JSONResponse({"detail": f"a station's API token is needed: {_REFUSED[station]}"}, 401,
                                        headers={"WWW-Authenticate": challenge})
                return await response(scope, receive, send)
        scope["station"] = station
        scope["caller"] = Caller(actor=station.actor if station else ACTOR, client_addr=client_addr,
                                 received_at=received_at)
        await self.app(scope, receive, send)


_REFUSED = {
    Refusal.MISSING: "send `Authorization: Bearer <token>` (`visionledger tokens issue`)",
    Refusal.MALFORMED: "this is not a station token",
    Refusal.UNKNOWN: "this token is not valid",
    Refusal.EXPIRED: "this token has expired",
    Refusal.REVOKED: "this token has been revoked",
}


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""  # another scheme: a token that is not ours


def create_app(service: InspectionService, *, docs: bool = False, authenticate: bool = True) -> FastAPI:
    """The API over a constructed (not yet started) service; the app starts and stops it. ``docs`` serves
    /docs and /openapi.json. ``authenticate=False`` opens /v1/ to anyone, for benchmarks to measure what
    authentication costs: no command offers it."""

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
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )

    async def refuse_request(scope: Scope, size: int, counted: bool) -> None:
        """Quarantine a request body over the limit: its fields were never read, so the caller names it."""
        caller: Caller = scope["caller"]
        detail = (f"the request {'sent more than' if counted else 'declares'} {size:,} bytes, above the limit of "
                  f"{service.config.max_request_bytes:,}")
        await service.quarantine(ImageRefused(Rejected(RejectReason.TOO_LARGE, detail)), None, "request",
                                 caller.client_addr, caller.received_at.isoformat(), size, caller=caller)

    # The last middleware added runs first: the gate (rate limit, token) before anything is quarantined.
    app.add_middleware(_BodyLimit, limit=service.config.max_request_bytes, refused=refuse_request)
    docs_paths = {app.docs_url, app.swagger_ui_oauth2_redirect_url, app.redoc_url, app.openapi_url} if docs else set()
    app.add_middleware(Gate, service=service, authenticate=authenticate, open_paths=frozenset({"/healthz", *docs_paths}))

    def check_captured_at(request: Request, fields: CaptureFields, *, index: int | None = None) -> None:
        """Refuse a capture time too far from when the server received it (ServeConfig's window)."""
        config, moment, received = service.config, fields.captured_at, request.scope["caller"].received_at
        if config.max_capture_age is not None and moment < received - config.max_capture_age:
            problem = f"lies more than {config.max_capture_age} before the server received it ({received.isoformat()})"
        elif config.max_capture_lead is not None and moment > received + config.max_capture_lead:
            problem = f"lies more than {config.max_capture_lead} after the server received it ({received.isoformat()})"
        else:
            return
        where = f"captures[{index}]." if index is not None else ""
        raise HTTPException(422, f"{where}captured_at: {moment.isoformat()} {problem}")

    def capture_of(request: Request, fields: CaptureFields) -> Capture:
        """The capture, on the token's line unless the request names one; 403 outside the token's scope."""
        station: StationPrincipal | None = request.scope["station"]
        line = fields.line or (station.line if station else None)
        if line is None:
            raise HTTPException(422, "line: name the line (a request without a token has no line of its own)")
        if station is not None and (outside := station.refuses(line, fields.station, fields.camera)):
            raise HTTPException(403, outside)
        return Capture(part_id=fields.part_id, line=line, station=fields.station, camera=fields.camera,
                       captured_at=fields.captured_at)

    async def read_limited(request: Request, upload: UploadFile, capture: Capture) -> bytes:
        """The upload's bytes; one above the limit is refused, and quarantined, before it is read whole."""
        limit = service.config.max_image_bytes
        data = await upload.read(limit + 1)
        if len(data) > limit:
            size = f"{upload.size:,} bytes" if upload.size is not None else "more bytes"
            refused = ImageRefused(Rejected(RejectReason.TOO_LARGE, f"image {upload.filename!r}: {size}, above the "
                                                                    f"limit of {limit:,}"))
            await service.quarantine(refused, capture, upload.size, caller=request.scope["caller"])
            raise refused
        return data

    async def inspect_one(request: Request, data: bytes, capture: Capture) -> dict[str, Any]:
        inspection, destination = await service.inspect(data, capture, request.scope["caller"])
        return inspection.to_json() | {"recorded_in": destination}

    def refused(exc: ImageRefused) -> HTTPException:
        r = exc.rejected
        return HTTPException(_STATUS.get(r.reason, 422), {"reason": r.reason.value, "detail": r.detail})

    @app.post("/v1/inspect", summary="Inspect one image of a part")
    async def inspect(
        request: Request,
        image: Annotated[UploadFile, File(description="the image: PNG, JPEG, TIFF or BMP, gray or colour")],
        part_id: Annotated[str, Form()],
        station: Annotated[str, Form()],
        camera: Annotated[str, Form()],
        captured_at: Annotated[datetime, Form(description="ISO 8601 with a UTC offset")],
        line: Annotated[str | None, Form()] = None,
    ) -> dict[str, Any]:
        fields = _fields({"part_id": part_id, "station": station, "camera": camera, "captured_at": captured_at,
                          "line": line})
        capture = capture_of(request, fields)
        check_captured_at(request, fields)
        try:
            return await inspect_one(request, await read_limited(request, image, capture), capture)
        except ImageRefused as exc:
            raise refused(exc) from None

    @app.post("/v1/inspect/batch", summary="Inspect several images")
    async def inspect_batch(
        request: Request,
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
        in_scope = [capture_of(request, f) for f in fields]  # one capture outside the token's scope refuses all
        for i, f in enumerate(fields):
            check_captured_at(request, f, index=i)
        results = []
        for upload, f, capture in zip(images, fields, in_scope, strict=True):
            try:
                results.append(await inspect_one(request, await read_limited(request, upload, capture), capture))
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

    @app.get("/v1/status", summary="The engine serving, the state of the event path and the batching figures")
    async def status() -> JSONResponse:
        return JSONResponse(service.health())

    @app.get("/healthz", summary="Liveness: ok, or degraded while events wait in the spool")
    async def healthz() -> JSONResponse:
        # Open to anyone: the load balancer's answer only, no engine, threshold, path or count.
        return JSONResponse({"status": service.health()["status"]})


    return app


def _fields(values: dict[str, Any], *, index: int | None = None) -> CaptureFields:
    # The values arrive as one dict, not as keywords: a client's key must never meet this function's own arguments.
    try:
        return CaptureFields(**values)
    except ValidationError as exc:
        where = f"captures[{index}]: " if index is not None else ""
        problems = "; ".join(f"{where}{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise HTTPException(422, problems) from None


class _BodyLimit:
    """Refuses an inspection request whose body is above `limit` bytes with 413: at once when its
    Content-Length says so, else as soon as the bytes streamed in pass it; `refused` quarantines it first."""

    def __init__(self, app: ASGIApp, *, limit: int, refused: Any):
        self.app, self.limit, self.refused = app, limit, refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/inspect"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self.refused(scope, int(declared), False)
            await JSONResponse({"detail": f"the request is larger than the limit of {self.limit:,} bytes"},
                               status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                await self.refused(scope, received, True)
                # An HTTPException passes through the form parser to the app's own 413 answer.
                raise HTTPException(413, f"the request is larger than the limit of {self.limit:,} bytes")
            return message

        await self.app(scope, counted, send)


def _not_object(index: int) -> CaptureFields:
    raise HTTPException(422, f"captures[{index}] must be an object of part_id, station, camera, captured_at")
