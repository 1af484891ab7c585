"""What `python serve.py` does: check every key, bind the port, load the model, serve.

Every key is described in conf/serve.yaml. Nothing heavy happens before all of them are
checked: a bad value (or a missing FastAPI/uvicorn) is one line ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import importlib.util
import sys

from dataclasses import dataclass, field
from typing import Iterable, Literal

from gpt_lightning.config.schemas import parse
from gpt_lightning.errors import ConfigError, bad_value
from gpt_lightning.weights.sources import InitConfig
from gpt_lightning.model import GPTConfig

SERVER_LIBS = ("fastapi", "uvicorn")


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
    api_key: str | None = None
    max_request_bytes: int = 1_000_000
    request_timeout: float = 30.0
    seed: int = 123
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    device: str = "auto"
    dtype: str = "auto"

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


def check_config(values: dict) -> ServeConfig:
    """The checked settings, or a one-line ConfigError for the first key that cannot work."""
    return parse(ServeConfig, values, "")


def require_server_libs() -> None:
    missing = [name for name in SERVER_LIBS if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"serving needs {' and '.join(missing)}, which are not installed: "
                          'pip install -e ".[serve]"')


def model_name(cfg: ServeConfig) -> str:
    if cfg.model_name:
        return str(cfg.model_name)
    return str(cfg.init.path) if cfg.init.name == "checkpoint" and cfg.init.path else str(cfg.init.name)


def run(values: dict, explicit: Iterable[str] = ()) -> None:
    """serve.py: ``values`` is the composed conf/serve.yaml as plain dicts."""
    cfg = check_config(values)
    require_server_libs()
    from gpt_lightning.generate.loading import load_model, pick_device, pick_dtype
    from gpt_lightning.tokenizer import get_tokenizer
    from gpt_lightning.serve.routes import ServeSettings, create_app
    from gpt_lightning.serve.scheduler import Scheduler
    from gpt_lightning.serve.server import bind, run_server, url_of

    device = pick_device(str(cfg.device))
    dtype = pick_dtype(str(cfg.dtype), device)
    sock = bind(cfg.host, cfg.port)  # a taken port fails now, before the weights load
    tok = get_tokenizer()
    model = load_model(cfg, device, dtype, tok, explicit)
    from gpt_lightning.serve.limits import api_key

    key = api_key(cfg.api_key)
    settings = ServeSettings(model_name=model_name(cfg), max_tokens_cap=cfg.max_tokens_cap,
                             default_max_tokens=cfg.default_max_tokens, retry_after=cfg.retry_after,
                             api_key=key, max_request_bytes=cfg.max_request_bytes,
                             request_timeout=cfg.request_timeout)
    scheduler = Scheduler(model, max_batch_size=cfg.max_batch_size, queue_size=cfg.queue_size)
    app = create_app(scheduler, tok, settings)
    print(f"serving {settings.model_name!r} at {url_of(sock)} (chat page at /, API at /v1; "
          "Ctrl-C or SIGTERM stops after the requests in flight)", file=sys.stderr, flush=True)
    if key is None and cfg.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: host={cfg.host} opens the server beyond this machine without an API key; set api_key= "
              "or GPT_LIGHTNING_API_KEY", file=sys.stderr, flush=True)
    run_server(app, sock, log_level=cfg.log_level, shutdown_timeout=cfg.shutdown_timeout,
               request_timeout=cfg.request_timeout)
