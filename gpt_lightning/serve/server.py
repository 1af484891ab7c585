"""Running the app with uvicorn: in the foreground (serve.py) or on a thread (tests, benchmarks).

The listening socket is bound first, so a taken port fails in one line before any weights
load. SIGTERM and Ctrl-C stop taking connections, let the requests in flight finish (up to
``shutdown_timeout`` seconds), stop the scheduler and return, so the process exits with 0.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from typing import Iterator

import uvicorn

from gpt_lightning.errors import bad_value


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one), or a one-line error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise bad_value("host", host, f"an address of this machine, e.g. 127.0.0.1 ({err.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        key, value = ("port", port) if err.errno == 98 else ("host", host)  # 98: address in use
        raise bad_value(key, value, f"cannot listen on {host}:{port} ({err.strerror}); "
                                    "choose another port (port=0 takes any free one)") from None
    sock.listen(2048)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _config(app, log_level: str, shutdown_timeout: float | None, request_timeout: float = 30.0) -> uvicorn.Config:
    from gpt_lightning.serve.limits import timed_protocol

    return uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=shutdown_timeout, lifespan="on",
                          http=timed_protocol(request_timeout))  # a request head must arrive in time


def run_server(app, sock: socket.socket, *, log_level: str = "info", shutdown_timeout: float | None = None,
               request_timeout: float = 30.0) -> None:
    """Serve ``app`` on ``sock`` until SIGTERM or Ctrl-C, then shut down gracefully and return."""
    server = uvicorn.Server(_config(app, log_level, shutdown_timeout, request_timeout))
    # uvicorn re-raises the signal it caught once it is done; with these handlers in place
    # that is a no-op and the process exits normally (code 0) after the graceful shutdown.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def background_server(app, host: str = "127.0.0.1", *, log_level: str = "warning",
                      shutdown_timeout: float | None = 10, start_timeout: float = 60,
                      request_timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` on a free port of ``host`` from a thread; yields its base URL and stops
    it (gracefully, at most ``shutdown_timeout`` s) when the block ends."""
    sock = bind(host, 0)
    server = uvicorn.Server(_config(app, log_level, shutdown_timeout, request_timeout))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        for _ in range(int(start_timeout * 20)):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.05)
        if not server.started:
            raise RuntimeError(f"the server did not start within {start_timeout} s")
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join((shutdown_timeout or 10) + 10)
        sock.close()
