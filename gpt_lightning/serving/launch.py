"""What `python serve.py` does: check every key, bind the port, load the model, serve.

Every key is described in conf/serve.yaml. Nothing heavy happens before all of them are
checked: a bad value (or a missing FastAPI/uvicorn) is one line ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import importlib.util
import sys

from omegaconf import DictConfig

from ..errors import ConfigError, bad_value

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
SERVER_LIBS = ("fastapi", "uvicorn")


def check_config(cfg: DictConfig) -> None:
    """Raise a one-line ConfigError for the first serve.yaml key that cannot work."""
    if not isinstance(cfg.host, str) or not cfg.host:
        raise bad_value("host", cfg.host, "an address to listen on, e.g. 127.0.0.1")
    if not _is_int(cfg.port) or not 0 <= cfg.port <= 65535:
        raise bad_value("port", cfg.port, "an integer in [0, 65535] (0 = any free port)")
    if cfg.model_name is not None and (not isinstance(cfg.model_name, str) or not cfg.model_name):
        raise bad_value("model_name", cfg.model_name, "a non-empty string, or null for the init's name")
    for key in ("max_batch_size", "queue_size", "retry_after", "max_tokens_cap", "default_max_tokens"):
        if not _is_int(cfg[key]) or cfg[key] < 1:
            raise bad_value(key, cfg[key], "an integer >= 1")
    if cfg.default_max_tokens > cfg.max_tokens_cap:
        raise bad_value("default_max_tokens", cfg.default_max_tokens,
                        f"at most max_tokens_cap={cfg.max_tokens_cap}")
    timeout = cfg.shutdown_timeout
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise bad_value("shutdown_timeout", timeout, "a number of seconds > 0, or null to wait without limit")
    if not _is_int(cfg.seed):
        raise bad_value("seed", cfg.seed, "an integer")
    if cfg.log_level not in LOG_LEVELS:
        raise bad_value("log_level", cfg.log_level, f"one of {', '.join(LOG_LEVELS)}")


def require_server_libs() -> None:
    missing = [name for name in SERVER_LIBS if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"serving needs {' and '.join(missing)}, which are not installed: "
                          'pip install -e ".[serve]"')


def model_name(cfg: DictConfig) -> str:
    if cfg.model_name:
        return str(cfg.model_name)
    return str(cfg.init.path) if cfg.init.name == "checkpoint" and cfg.init.path else str(cfg.init.name)


def run(cfg: DictConfig) -> None:
    check_config(cfg)
    require_server_libs()
    from ..generate_app import load_model, pick_device, pick_dtype
    from ..tokenizer import get_tokenizer
    from .app import ServeSettings, create_app
    from .scheduler import Scheduler
    from .server import bind, run_server, url_of

    device = pick_device(str(cfg.device))
    dtype = pick_dtype(str(cfg.dtype), device)
    sock = bind(cfg.host, cfg.port)  # a taken port fails now, before the weights load
    tok = get_tokenizer()
    model = load_model(cfg, device, dtype, tok)
    settings = ServeSettings(model_name=model_name(cfg), max_tokens_cap=cfg.max_tokens_cap,
                             default_max_tokens=cfg.default_max_tokens, retry_after=cfg.retry_after)
    scheduler = Scheduler(model, max_batch_size=cfg.max_batch_size, queue_size=cfg.queue_size)
    app = create_app(scheduler, tok, settings)
    print(f"serving {settings.model_name!r} at {url_of(sock)} (chat page at /, API at /v1; "
          "Ctrl-C or SIGTERM stops after the requests in flight)", file=sys.stderr, flush=True)
    run_server(app, sock, log_level=cfg.log_level, shutdown_timeout=cfg.shutdown_timeout)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
