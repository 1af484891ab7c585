"""The HTTP side: OpenAI-compatible routes (FastAPI) in front of the scheduler.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (both with ``stream: true``
as server-sent events in OpenAI's chunk format), ``GET /v1/models``, ``GET /health`` and the
chat page at ``/``. Bodies are read within limits.py's size and time limits; prompts are
parsed, tokenized and checked here, on a worker thread (not the event loop); the scheduler
thread only sees finished :class:`Sequence` objects and reports tokens back through
``call_soon_threadsafe``. Text is made from tokens with ``StreamDecoder`` for streamed and
whole answers alike, so both carry the same text: the new tokens without <|endoftext|>,
cut before the first stop string.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gpt_lightning.generate.prompts import chat_prompt, encode
from gpt_lightning.generate.sampling import StopCriteria, StreamDecoder, make_generators
from gpt_lightning.tokenizer import Tokenizer
from gpt_lightning.serve import limits, schemas
from gpt_lightning.serve.scheduler import Closed, QueueFull, Scheduler, Sequence
from gpt_lightning.serve.schemas import ChatRequest, CompletionRequest, RequestError

MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ServeSettings:
    """The limits and names of one server (conf/serve.yaml describes each)."""

    model_name: str
    max_tokens_cap: int
    default_max_tokens: int
    retry_after: int
    chat_template: str | None = None  # the Jinja chat template the loaded export declares; None = the built-in one
    api_key: str | None = None  # /v1 requests must carry it as a Bearer token (limits.py)
    max_request_bytes: int = 1_000_000  # a larger body: 413
    request_timeout: float = 30.0  # seconds for a request's head and for its body


def create_app(scheduler: Scheduler, tok: Tokenizer, settings: ServeSettings) -> FastAPI:
    """The app; its lifespan starts the scheduler and stops it once requests are done."""

    @asynccontextmanager
    async def lifespan(_app):
        scheduler.start()
        try:
            yield
        finally:
            scheduler.close()
            await asyncio.to_thread(scheduler.stop)

    app = FastAPI(title="gpt_lightning", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    service = _Service(scheduler, tok, settings)
    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    @app.exception_handler(RequestError)
    async def _request_error(_request, err: RequestError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, err: StarletteHTTPException):
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return JSONResponse(RequestError(err.status_code, str(err.detail), type=kind).body(),
                            status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.middleware("http")
    async def _authorize(request: Request, call_next):
        if request.url.path.startswith("/v1"):
            try:
                limits.check_api_key(settings.api_key, request.headers.get("authorization"))
            except RequestError as err:
                return JSONResponse(err.body(), status_code=err.status, headers=err.headers)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    async def chat_page():
        return HTMLResponse(page)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": settings.model_name, **scheduler.counts()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [service.model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        service.check_model(model_id, status=404)
        return service.model_card()

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await service.answer(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await service.answer(request, chat=True)

    return app


class _Service:
    def __init__(self, scheduler: Scheduler, tok: Tokenizer, settings: ServeSettings) -> None:
        self.scheduler, self.tok, self.settings = scheduler, tok, settings
        self.context_length = scheduler.model.config.context_length
        self.created = int(time.time())

    def model_card(self) -> dict:
        return {"id": self.settings.model_name, "object": "model", "created": self.created,
                "owned_by": "gpt_lightning", "context_length": self.context_length}

    def check_model(self, name: str | None, status: int = 404) -> None:
        if name is not None and name != self.settings.model_name:
            raise RequestError(status, f"the model {name!r} does not exist; this server serves "
                                       f"{self.settings.model_name!r}", "model", type="invalid_request_error",
                               code="model_not_found")

    # ---- a request -----------------------------------------------------------------
    async def answer(self, request: Request, *, chat: bool):
        body = await limits.read_body(request, limit=self.settings.max_request_bytes,
                                      timeout=self.settings.request_timeout)
        # parsing and tokenizing are CPU work: off the event loop, so other streams go on
        req, sampling, limit, stops, prompts, n = await asyncio.to_thread(self._prepare, body, chat)
        seed = req.seed if req.seed is not None else secrets.randbits(62)

        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        sequences = []
        for number in range(len(prompts) * n):
            prompt = prompts[number // n]
            def on_event(kind, value, number=number):
                loop.call_soon_threadsafe(events.put_nowait, (number, kind, value))
            generator = make_generators(seed + number, 1)[0] if sampling.temperature > 0 else None
            sequences.append(Sequence(prompt, min(limit, self.context_length - len(prompt)), sampling,
                                      StopCriteria(self.tok.eot_id, stops, self.tok.decode), generator, on_event))
        try:
            self.scheduler.submit(sequences)
        except QueueFull:
            raise RequestError(429, "the server is busy (its queue is full); retry after "
                                    f"{self.settings.retry_after} s", type="rate_limit_error",
                               headers={"Retry-After": str(self.settings.retry_after)}) from None
        except Closed:
            raise RequestError(503, "the server is shutting down", type="server_error") from None

        answer = _Answer(self, req, chat, sequences, stops, events)
        if req.stream:
            return StreamingResponse(answer.chunks(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return JSONResponse(await answer.whole(request))

    def _prepare(self, body: bytes, chat: bool):
        """The checked request, its sampling settings, max tokens, stop strings, prompts and n."""
        req = schemas.parse(ChatRequest if chat else CompletionRequest, body)
        self.check_model(req.model)
        sampling = schemas.sampling(req)
        # a chat leaves room for the conversation: by default at most half the context
        default = min(self.settings.default_max_tokens,
                      max(1, self.context_length // 2) if chat else self.context_length - 1)
        limit = schemas.max_tokens(req, cap=self.settings.max_tokens_cap, default=default)
        stops = schemas.stop_strings(req)
        prompts = self._chat_prompt(req, limit) if chat else self._completion_prompts(req)
        n = schemas.choices(req, prompts=len(prompts), limit=self.scheduler.queue_size)
        if req.seed is not None and not 0 <= req.seed <= MAX_SEED:
            raise RequestError(400, f"seed={req.seed} is invalid: an integer in [0, 2**63 - 1]", "seed")
        return req, sampling, limit, stops, prompts, n

    def _completion_prompts(self, req: CompletionRequest) -> list[list[int]]:
        prompt = req.prompt
        if isinstance(prompt, str):
            texts = [prompt]
        elif prompt and all(isinstance(p, int) for p in prompt):
            texts = [prompt]
        else:
            texts = list(prompt)
        if not texts:
            raise RequestError(400, "prompt=[] is invalid: give at least one prompt", "prompt")
        prompts = []
        for i, text in enumerate(texts):
            ids = encode(self.tok, text) if isinstance(text, str) else list(text)
            if not ids:
                raise RequestError(400, f"prompt[{i}] has no tokens", "prompt")
            bad = [t for t in ids if not 0 <= t < self.tok.vocab_size]
            if bad:
                raise RequestError(400, f"prompt token {bad[0]} is invalid: ids in [0, {self.tok.vocab_size})", "prompt")
            self._check_length(ids, "prompt")
            prompts.append(ids)
        return prompts

    def _chat_prompt(self, req: ChatRequest, limit: int) -> list[list[int]]:
        """The conversation in the instruction template, oldest turns dropped to fit (as
        ``generate.py chat=true``), in the chat template the export declares, else the built-in
        instruction template; system messages replace the template's preamble."""
        system = [m.text() for m in req.messages if m.role in ("system", "developer")]
        turns = [m for m in req.messages if m.role not in ("system", "developer")]
        roles = [m.role for m in turns]
        expected = ["user", "assistant"] * (len(turns) // 2) + ["user"]
        if roles != expected[: len(roles)] or len(roles) % 2 == 0:
            raise RequestError(400, "messages are invalid: after any system messages, user and assistant "
                                    "messages must alternate, starting and ending with a user message", "messages")
        budget = self.context_length - limit
        if budget < 1:
            raise RequestError(400, f"max_tokens={limit} is invalid: it must be less than the model's "
                                    f"context_length={self.context_length}, to leave room for the conversation",
                               "max_tokens")
        history = [(turns[i].text(), turns[i + 1].text().strip()) for i in range(0, len(turns) - 1, 2)]
        ids = chat_prompt(self.tok, history, turns[-1].text(), budget, system=system,
                          chat_template=self.settings.chat_template)  # the export's template, if it declares one
        self._check_length(ids, "messages")
        return [ids]

    def _check_length(self, ids: list[int], param: str) -> None:
        if len(ids) >= self.context_length:
            raise RequestError(400, f"{param} has {len(ids)} tokens; this model's context_length is "
                                    f"{self.context_length} and needs room for at least one new token", param,
                               code="context_length_exceeded")


class _Answer:
    """Events from the scheduler turned into OpenAI's response or chunk stream."""

    def __init__(self, service: _Service, req, chat: bool, sequences: list[Sequence], stops: list[str],
                 events: asyncio.Queue) -> None:
        self.service, self.req, self.chat, self.sequences, self.events = service, req, chat, sequences, events
        tok = service.tok
        self.eot = tok.eot_id
        self.decoders = [StreamDecoder(tok.decode_bytes, skip_ids={tok.eot_id}, stop_strings=stops) for _ in sequences]
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.counts = [0] * len(sequences)

    def _usage(self) -> dict:
        prompt = sum(len(s.prompt) for s in self.sequences[:: self.req.n])
        completion = sum(self.counts)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def _events(self):
        """(choice, text delta, finish reason or None) until every choice is done."""
        left = len(self.sequences)
        while left:
            number, kind, value = await self.events.get()
            if kind == "token":
                self.counts[number] += value != self.eot
                text = self.decoders[number].push(value)
                if text:
                    yield number, text, None
            elif kind == "done":
                left -= 1
                yield number, self.decoders[number].finish(), value
            else:
                raise RequestError(500, f"generation failed: {value}", type="server_error")

    async def whole(self, request: Request) -> dict:
        texts, reasons = [""] * len(self.sequences), [None] * len(self.sequences)
        watcher = asyncio.create_task(self._cancel_on_disconnect(request))
        try:
            async for number, text, reason in self._events():
                texts[number] += text
                reasons[number] = reason or reasons[number]
        finally:
            watcher.cancel()
            self._cancel()
        if self.chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None,
                        "finish_reason": r} for i, (t, r) in enumerate(zip(texts, reasons))]
        else:
            choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": r}
                       for i, (t, r) in enumerate(zip(texts, reasons))]
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.service.settings.model_name, "choices": choices,
                "usage": self._usage()}

    async def chunks(self):
        """Server-sent events; the client going away cancels the sequences still running."""
        try:
            if self.chat:
                for i in range(len(self.sequences)):
                    yield self._sse(self._chunk(i, None, None, first=True))
            try:
                async for number, text, reason in self._events():
                    if text:
                        yield self._sse(self._chunk(number, text, None))
                    if reason:
                        yield self._sse(self._chunk(number, None, reason))
            except RequestError as err:
                yield self._sse(err.body())
                return
            if self.req.stream_options and self.req.stream_options.include_usage:
                yield self._sse({**self._head(), "choices": [], "usage": self._usage()})
            yield "data: [DONE]\n\n"
        finally:
            self._cancel()

    def _head(self) -> dict:
        return {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created, "model": self.service.settings.model_name}

    def _chunk(self, number: int, text: str | None, reason: str | None, first: bool = False) -> dict:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
            choice = {"index": number, "delta": delta, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": number, "text": text or "", "logprobs": None, "finish_reason": reason}
        return {**self._head(), "choices": [choice]}

    @staticmethod
    def _sse(data: dict) -> str:
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    def _cancel(self) -> None:
        for seq in self.sequences:
            seq.cancelled = True  # finished ones ignore it

    async def _cancel_on_disconnect(self, request: Request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        self._cancel()
