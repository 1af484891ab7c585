"""What `python serve.py` does: check every key, bind the port, load the model, serve.

Every key is described in conf/serve.yaml. Nothing heavy happens before all of them are
checked: a bad value (or a missing FastAPI/uvicorn) is one line ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import importlib.util
import sys

from typing import Iterable

from gpt_lightning.config.schemas import parse
from gpt_lightning.errors import ConfigError
from gpt_lightning.config.serve import ServeConfig

SERVER_LIBS = ("fastapi", "uvicorn")


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
    from gpt_lightning.quantize import check_quantize
    from gpt_lightning.tokenizer import get_tokenizer
    from gpt_lightning.serve.routes import ServeSettings, create_app
    from gpt_lightning.serve.scheduler import Scheduler
    from gpt_lightning.serve.server import bind, run_server, url_of

    device = pick_device(str(cfg.device))
    dtype = pick_dtype(str(cfg.dtype), device)
    check_quantize(cfg.quantize, device, dtype)
    sock = bind(cfg.host, cfg.port)  # a taken port fails now, before the weights load
    tok = get_tokenizer()
    model = load_model(cfg, device, dtype, tok, explicit)
    from gpt_lightning.data.chat_template import declared_chat_template
    from gpt_lightning.serve.limits import api_key

    key = api_key(cfg.api_key)
    settings = ServeSettings(model_name=model_name(cfg), max_tokens_cap=cfg.max_tokens_cap,
                             default_max_tokens=cfg.default_max_tokens, retry_after=cfg.retry_after,
                             chat_template=declared_chat_template(cfg.init.path if cfg.init.name == "checkpoint" else None),
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
