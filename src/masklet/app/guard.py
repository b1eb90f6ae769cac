"""Who may talk to the app, and how much: one policy in front of every route.

The app has no login and serves loopback, so what it must refuse is another web page in
the user's browser talking to it:

- **Host allow-list (every route, page and API).** A DNS-rebinding page reaches the app
  under its own name (``Host: evil.example``); only loopback names (``localhost``,
  ``127.0.0.1``, ``[::1]``, any port), the ``--host`` the server listens on and the names
  given with ``--allow-host`` are served. Anything else is a 403.
- **State changes (POST, PUT, PATCH, DELETE, any path) need the app's own page.** They
  must carry the header ``X-Masklet: 1``, which neither an HTML form nor a
  ``no-cors`` fetch can send (a custom header needs a CORS preflight, and the app never
  approves one: it has no CORS middleware); an ``Origin`` header, when present, must be
  the app's own origin (its host and port are the request's ``Host``); and
  ``Sec-Fetch-Site``, when present, must be ``same-origin`` or ``none``.
- **Reads.** The Host check is what stops a rebinding page from reading data; a page of
  another origin cannot read the answers of its requests anyway (same-origin policy).
  As defence in depth, API reads that a browser marks as coming from another site
  (``Sec-Fetch-Site`` other than ``same-origin``/``none``) are refused too, so another
  page cannot even probe with ``<img src=...>``; the page itself (``/``) may be linked
  to from anywhere.
- **Body size.** A state-changing request's body is read here, at most
  ``max_json_mb`` (the Content-Length is checked first, then the bytes as they come);
  past it the answer is 413 and the route never runs. The two multipart upload routes
  are exempt: they stream to disk under their own ``--max-upload-mb`` limit.

`install` also registers the error handlers that keep every refusal a one-line JSON
``{"detail": "..."}``: validation errors (never echoing the input, which may hold NaN or
Infinity that JSON cannot carry) and a busy model (503).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from masklet.app.runtime import ModelBusy

HEADER = "X-Masklet"  # the page sends "X-Masklet: 1" with every request
HEADER_VALUE = "1"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ALLOWED_FETCH_SITES = ("same-origin", "none")
# Multipart routes with their own (upload) size limit.
UPLOAD_PATHS = re.compile(r"/api/videos/(upload|[^/]+/masks/import)/?")
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
DETAIL_CHARS = 300

Scope = dict
Message = dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def normalize_host(name: str) -> str:
    """A host name as compared: lower case, no IPv6 brackets, no trailing dot."""
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name.rstrip(".")


def split_host(value: str, scheme: str = "http") -> tuple[str, int | None] | None:
    """A ``Host`` header -> (normalized name, port; None for the scheme's default port).

    None when the header is not a plain ``name[:port]``.
    """
    if not value or any(c in value for c in "/\\@?# \t") or len(value) > 255:
        return None
    try:
        parts = urlsplit(f"//{value}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    if port == DEFAULT_PORTS.get(scheme):
        port = None
    return normalize_host(parts.hostname), port


def same_origin(origin: str, host: tuple[str, int | None]) -> bool:
    """Whether an ``Origin`` header names the origin the request was sent to (its Host).

    The scheme is not compared with the connection's: behind a TLS proxy the app sees
    http while the page is https, and no other site can hold this host and port.
    """
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if port == DEFAULT_PORTS[parts.scheme]:
        port = None
    return (normalize_host(parts.hostname), port) == host


def _quoted(value: str) -> str:
    value = " ".join(value.split())
    return repr(value if len(value) <= 60 else value[:57] + "...")


@dataclass(frozen=True)
class GuardPolicy:
    """hosts: the names served (normalized); max_body_bytes: a state-changing request's
    largest body, uploads apart."""

    hosts: frozenset[str]
    max_body_bytes: int

    @classmethod
    def of(cls, extra_hosts: tuple[str, ...] | list[str], max_body_bytes: int) -> GuardPolicy:
        names = {normalize_host(h) for h in (*LOOPBACK_NAMES, *extra_hosts) if h.strip()}
        return cls(frozenset(names), max_body_bytes)

    def refusal(self, method: str, path: str, scheme: str, headers: Headers
                ) -> tuple[int, str] | None:
        """(status, detail) when the request must be refused before it reaches a route."""
        raw_host = headers.get("host", "")
        host = split_host(raw_host, scheme)
        if host is None:
            return 400, f"the request has no valid Host header (got {_quoted(raw_host)})"
        if host[0] not in self.hosts:
            return 403, (f"host {_quoted(host[0])} is not served here (DNS rebinding?); to "
                         f"serve it, start masklet serve with --allow-host {host[0][:60]}")
        site = headers.get("sec-fetch-site")
        api = path == "/api" or path.startswith("/api/")
        changing = method in CHANGING
        if site is not None and site not in ALLOWED_FETCH_SITES and (api or changing):
            return 403, f"requests from other sites are refused (Sec-Fetch-Site: {_quoted(site)})"
        if not changing:
            return None
        origin = headers.get("origin")
        if origin is not None and not same_origin(origin, host):
            return 403, (f"changes from another origin ({_quoted(origin)}) are refused; "
                         "use the app's own page")
        if headers.get(HEADER) != HEADER_VALUE:
            return 403, (f"a change needs the header '{HEADER}: {HEADER_VALUE}' (the app's page "
                         "sends it; other sites cannot)")
        return None

    def limits_body(self, method: str, path: str) -> bool:
        return method in CHANGING and UPLOAD_PATHS.fullmatch(path) is None

    def too_large(self) -> str:
        return (f"the request body is larger than the server's limit of "
                f"{self.max_body_bytes / 2**20:.3g} MB (--max-json-mb)")


async def _answer(scope: Scope, send: Send, status: int, detail: str) -> None:
    await JSONResponse({"detail": detail}, status_code=status)(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class OriginGuard:
    """Pure ASGI middleware applying a `GuardPolicy` to every HTTP request."""

    def __init__(self, app, policy: GuardPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan; the app serves no websocket
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        method, path = scope["method"], scope["path"]
        refused = self.policy.refusal(method, path, scope.get("scheme", "http"), headers)
        if refused is not None:
            await _answer(scope, send, *refused)
            return
        if self.policy.limits_body(method, path):
            receive = await self._bounded(scope, headers, receive, send)
            if receive is None:
                return
        await self.app(scope, receive, send)

    async def _bounded(self, scope: Scope, headers: Headers, receive: Receive, send: Send
                       ) -> Receive | None:
        """The body read in full (at most the limit) and replayed; None once answered."""
        limit = self.policy.max_body_bytes
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _answer(scope, send, 413, self.policy.too_large())
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client left: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _answer(scope, send, 413, self.policy.too_large())
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # e.g. waiting for a disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay


def validation_detail(errors: list[dict]) -> str:
    """One line naming the first problem's place and pydantic's message, never the input."""
    if not errors:
        return "the request is not valid"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    message = str(first.get("msg", "is not valid"))
    context = first.get("ctx") or {}
    if first.get("type") == "json_invalid" and isinstance(context.get("error"), str):
        message = f"{message}: {context['error']}"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    detail = " ".join(f"{where}: {message}{more}".split())
    return detail if len(detail) <= DETAIL_CHARS else detail[: DETAIL_CHARS - 3] + "..."


def install(app: FastAPI, config) -> None:
    """Put the guard in front of `app` and register its one-line error handlers.

    `config` is the service's `AppConfig` (allowed_hosts, max_json_mb).
    """
    policy = GuardPolicy.of(config.allowed_hosts, int(config.max_json_mb * 2**20))
    app.add_middleware(OriginGuard, policy=policy)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(list(err.errors()))}, status_code=422)

    @app.exception_handler(ModelBusy)
    async def busy(request: Request, err: ModelBusy) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=503,
                            headers={"Retry-After": "5"})
