"""Request bodies of the OpenAI-compatible endpoints, validated before anything runs.

Fields follow OpenAI's API where it has them; ``top_k`` and ``repetition_penalty`` are ours.
Types are strict (``"0.5"`` is not a number) and unknown fields are rejected, so a typo never
runs silently. OpenAI fields this server does not implement are accepted only at their neutral
value (e.g. ``frequency_penalty: 0``); ``user`` is accepted and ignored.
Every problem becomes a :class:`RequestError` that the app answers as OpenAI-style JSON:
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, ValidationError

from gpt_lightning.errors import ConfigError
from gpt_lightning.generate.sampling import check_settings
from gpt_lightning.serve.scheduler import Sampling

MAX_STOP = 4  # OpenAI's limit on stop strings


class RequestError(Exception):
    """An answer other than 200: status, message, and the request field it is about."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 type: str = "invalid_request_error", code: str | None = None,  # noqa: A002 (OpenAI's name)
                 headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False  # a last chunk with the token counts


class _Request(_Strict):
    model: str | None = None  # the served model's id; may be left out
    max_tokens: int | None = None
    temperature: float = 1.0  # OpenAI's default; 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # ours: 0 = off
    repetition_penalty: float = 1.0  # ours: 1 = off
    stop: Union[str, list[str], None] = None
    seed: int | None = None  # choice i samples with seed + i (as generate.py's completion i)
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted and ignored
    # OpenAI fields without an implementation here: only their neutral value is accepted
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict | None = None


class CompletionRequest(_Request):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]
    name: str | None = None  # accepted and ignored

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Request):
    messages: list[Message]
    max_completion_tokens: int | None = None  # OpenAI's newer name for max_tokens
    logprobs: bool | None = None
    top_logprobs: int | None = None


NEUTRAL = {"frequency_penalty": 0.0, "presence_penalty": 0.0, "logit_bias": None, "echo": False,
           "logprobs": None, "best_of": None, "suffix": None, "top_logprobs": None}
NEUTRAL_ALSO = {"logit_bias": {}, "best_of": 1, "logprobs": False}  # other spellings of "off"


MAX_DEPTH = 32  # nesting of JSON arrays/objects; a request needs 5


def _not_json(token: str):
    raise ValueError(f"{token} is not JSON")  # Python's json reads NaN and Infinity; JSON has neither


# What each pydantic error type means, in words of the API (pydantic's own wording stays out)
_EXPECTED = {"int_type": "an integer", "int_parsing": "an integer", "float_type": "a number",
             "float_parsing": "a number", "string_type": "a string", "bool_type": "true or false",
             "list_type": "a list", "dict_type": "an object", "model_type": "an object",
             "model_attributes_type": "an object", "int_from_float": "an integer",
             "finite_number": "a finite number"}
_FIELDS = {"prompt": "a string, a list of strings, a list of token ids or a list of lists of token ids",
           "stop": "a string or a list of strings", "messages": "a list of {role, content} objects",
           "content": "a string or a list of {type: text, text} parts", "role": "one of system, developer, user, "
           "assistant"}


def _depth(text: str) -> int:
    """The deepest nesting of brackets outside strings, counted without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            escaped, in_string = (not escaped and ch == "\\"), in_string and (escaped or ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _lone_surrogate(value, path: str = "") -> str | None:
    """The field holding a lone UTF-16 surrogate (``"\\ud800"``), which is no character at all."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
    elif isinstance(value, dict):
        for k, v in value.items():
            found = _lone_surrogate(k, path) or _lone_surrogate(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _lone_surrogate(v, f"{path}[{i}]")
            if found:
                return found
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse(kind: type[_Request], body: bytes) -> _Request:
    """The request in ``body`` (JSON), or RequestError 400 naming the first bad field."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(400, f"the request body is not UTF-8 ({err.reason} at byte {err.start})") from None
    if _depth(text) > MAX_DEPTH:
        raise RequestError(400, f"the request body nests arrays or objects more than {MAX_DEPTH} deep")
    try:
        payload = json.loads(text, parse_constant=_not_json)
    except (json.JSONDecodeError, ValueError, RecursionError) as err:
        raise RequestError(400, f"the request body is not valid JSON ({err})") from None
    if not isinstance(payload, dict):
        raise RequestError(400, f"the request body must be a JSON object, not {type(payload).__name__ if payload is not None else 'null'}")
    where = _lone_surrogate(payload)
    if where:
        raise RequestError(400, f"{where} holds a lone UTF-16 surrogate (e.g. \\ud800), which is not a character; "
                                "send valid Unicode", where.split(".")[0].split("[")[0])
    try:
        request = kind.model_validate(payload)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [p for p in first["loc"] if isinstance(p, int) or p in _all_fields()]
        param = ".".join(str(p) for p in loc) or None
        if first["type"] == "extra_forbidden":
            param = ".".join(str(p) for p in first["loc"])
            raise RequestError(400, f"unrecognized request field {param!r}", param) from None
        if first["type"] == "missing":
            raise RequestError(400, f"the field {param!r} is required", param) from None
        name = str(loc[-1]) if loc and isinstance(loc[-1], str) else (str(loc[0]) if loc else "")
        expected = _FIELDS.get(name) or _EXPECTED.get(first["type"])
        if expected is None and first["type"] == "literal_error":
            expected = "one of " + ", ".join(str(v) for v in (first.get("ctx") or {}).get("expected", "").replace("'", "").split(" or "))
        value = _short(_value_at(payload, loc))
        raise RequestError(400, f"{param}={value} is invalid: {expected or 'a value of another type'}", param) from None
    for key, neutral in NEUTRAL.items():
        if key in type(request).model_fields:
            value = getattr(request, key)
            if value != neutral and value != NEUTRAL_ALSO.get(key, neutral):
                raise RequestError(400, f"{key}={value!r} is not supported by this server; leave it out", key)
    return request


def _all_fields() -> set[str]:
    names: set[str] = set()
    for model in (CompletionRequest, ChatRequest, Message, TextPart, StreamOptions):
        names.update(model.model_fields)
    return names


def _value_at(payload, loc: list):
    value = payload
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return value
    return value


def sampling(request: _Request) -> Sampling:
    """The sampling settings, checked as generate.py checks its own."""
    values = {k: getattr(request, k) for k in ("temperature", "top_k", "top_p", "repetition_penalty")}
    for key, value in values.items():
        try:
            check_settings(**{key: value})
        except ConfigError as err:
            raise RequestError(400, str(err), key) from None
    return Sampling(**{k: float(v) if k != "top_k" else v for k, v in values.items()})


def max_tokens(request: _Request, *, cap: int, default: int) -> int:
    value, key = request.max_tokens, "max_tokens"
    other = getattr(request, "max_completion_tokens", None)
    if other is not None:
        if value is not None and value != other:
            raise RequestError(400, f"max_tokens={value} and max_completion_tokens={other} disagree; "
                                    "give one of them", "max_completion_tokens")
        value, key = other, "max_completion_tokens"
    if value is None:
        return default
    if value < 1 or value > cap:
        raise RequestError(400, f"{key}={value} is invalid: an integer in [1, {cap}] (this server's cap)", key)
    return value


def stop_strings(request: _Request) -> list[str]:
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stop) > MAX_STOP or not all(stop):
        raise RequestError(400, f"stop={request.stop!r} is invalid: at most {MAX_STOP} non-empty strings", "stop")
    return stop


def choices(request: _Request, *, prompts: int, limit: int) -> int:
    """``n``, checked: the request's completions (prompts x n) must fit the queue."""
    if request.n < 1 or prompts * request.n > limit:
        raise RequestError(400, f"n={request.n} is invalid: at least 1, and prompts x n at most {limit} "
                                "(the server's queue_size)", "n")
    return request.n
