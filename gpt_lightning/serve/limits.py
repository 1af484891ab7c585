"""What keeps one client from stalling or opening the server: an optional API key, a body size
limit, and time limits for a request's head and body.

- **API key** (``api_key`` or the ``GPT_LIGHTNING_API_KEY`` environment variable): every
  ``/v1`` request must carry ``Authorization: Bearer <key>``, or it gets a 401 in OpenAI's
  error format (``invalid_api_key``). The chat page and ``/health`` stay open (the page asks
  for the key). Use it whenever the server listens on more than 127.0.0.1.
- **Body size** (``max_request_bytes``): a larger body is refused with 413 as soon as its
  ``Content-Length`` or its bytes so far show it, without reading the rest.
- **Time** (``request_timeout``): a client has that many seconds to send its request head
  (uvicorn has no such limit: an idle or slowly-typed connection stayed open for ever) and
  as many for its body (408 then). Idle keep-alive connections close after uvicorn's 5 s.

uvicorn's h11 protocol is subclassed for the head's deadline (the only place that sees a
connection before its first request); the rest is plain ASGI/FastAPI code.
"""

from __future__ import annotations

import asyncio
import os
import secrets

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from gpt_lightning.serve.schemas import RequestError

API_KEY_ENV = "GPT_LIGHTNING_API_KEY"


def api_key(configured: str | None) -> str | None:
    """The key requests must carry: ``api_key`` when set, else the environment's, else None (open)."""
    return configured or os.environ.get(API_KEY_ENV) or None


def check_api_key(expected: str | None, authorization: str | None) -> None:
    """RequestError 401 (OpenAI's wording and code) unless the Bearer token is the key."""
    if expected is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if not authorization or scheme.lower() != "bearer" or not token.strip():
        raise RequestError(401, "You didn't provide an API key. You need to provide your API key in an "
                                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(token.strip().encode(), expected.encode()):
        raise RequestError(401, "Incorrect API key provided.", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})


async def read_body(request, *, limit: int, timeout: float) -> bytes:
    """The request body, at most ``limit`` bytes (413 beyond) within ``timeout`` seconds (408)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the request body has {int(declared):,} bytes; this server takes at most "
                                f"{limit:,} (max_request_bytes)", code="request_too_large")
    chunks, size = [], 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"the request body has more than {limit:,} bytes; this server takes at "
                                        "most that many (max_request_bytes)", code="request_too_large")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise RequestError(408, f"the request body did not arrive within {timeout:g} s (request_timeout)",
                           code="request_timeout") from None
    return b"".join(chunks)


def timed_protocol(head_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection that has not sent a whole request head
    within ``head_timeout`` seconds of connecting or of starting to send one."""

    class TimedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:  # still waiting for a whole request head
                if self._deadline is None:
                    self._arm()
            else:
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(head_timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return TimedH11Protocol
