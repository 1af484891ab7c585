"""Typed schema of serve.py's config (conf/serve.yaml, where every key is described)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gpt_lightning.config.schemas import InitConfig
from gpt_lightning.errors import bad_value
from gpt_lightning.model import GPTConfig


@dataclass
class ServeConfig:
    """The keys of conf/serve.yaml (described there), type-checked by ``config.parse``."""

    model: GPTConfig = field(default_factory=GPTConfig)  # shape for init=scratch
    init: InitConfig = field(default_factory=lambda: InitConfig("openai_124m"))
    host: str = "127.0.0.1"
    port: int = 8000
    model_name: str | None = None
    max_batch_size: int = 16
    queue_size: int = 64
    retry_after: int = 1
    max_tokens_cap: int = 1024
    default_max_tokens: int = 128
    shutdown_timeout: float | None = 60.0
    api_key: str | None = None  # /v1 requests must carry it as a Bearer token; null = no key
    max_request_bytes: int = 1_000_000  # a larger request body is refused (413)
    request_timeout: float = 30.0  # seconds for a request's head and for its body
    seed: int = 123
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    device: str = "auto"
    dtype: str = "auto"
    quantize: Literal["int8"] | None = None  # int8 weights per output channel (CPUs, float32)

    def __post_init__(self) -> None:
        if not self.host:
            raise bad_value("host", self.host, "an address to listen on, e.g. 127.0.0.1")
        if not 0 <= self.port <= 65535:
            raise bad_value("port", self.port, "an integer in [0, 65535] (0 = any free port)")
        if self.model_name is not None and not self.model_name:
            raise bad_value("model_name", self.model_name, "a non-empty string, or null for the init's name")
        for key in ("max_batch_size", "queue_size", "retry_after", "max_tokens_cap", "default_max_tokens"):
            if getattr(self, key) < 1:
                raise bad_value(key, getattr(self, key), "an integer >= 1")
        if self.default_max_tokens > self.max_tokens_cap:
            raise bad_value("default_max_tokens", self.default_max_tokens, f"at most max_tokens_cap={self.max_tokens_cap}")
        if self.api_key is not None and (not self.api_key.strip() or len(self.api_key) < 8):
            raise bad_value("api_key", "<hidden>", "at least 8 characters, or null (or unset) for no key; "
                            "e.g. api_key=$(python -c 'import secrets; print(secrets.token_urlsafe())')")
        if self.max_request_bytes < 1024:
            raise bad_value("max_request_bytes", self.max_request_bytes, "an integer >= 1024 (bytes of a request body)")
        if not self.request_timeout > 0:
            raise bad_value("request_timeout", self.request_timeout, "a number of seconds > 0")
        if self.shutdown_timeout is not None and self.shutdown_timeout <= 0:
            raise bad_value("shutdown_timeout", self.shutdown_timeout,
                            "a number of seconds > 0, or null to wait without limit")
