"""A fake Hugging Face hub on 127.0.0.1 for download tests.

It serves a folder laid out like the hub's ``<repo>/resolve/<revision>/<file>`` URLs,
records every request, and can cut a response half-way or ignore Range requests.
"""

import shutil
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gpt_lightning.download import sha256_of
from gpt_lightning.weights.hf_io import read_config
import torch

from gpt_lightning.weights.sources import HUB_WEIGHTS, HubWeights, build_model

REPO, REVISION = "openai-community/gpt2", "test-rev"
WEIGHTS_URL = f"/{REPO}/resolve/{REVISION}/model.safetensors"
SMALL = {"vocab_size": 50257, "context_length": 1024, "n_embd": 768, "n_layers": 12, "n_heads": 12, "dropout": 0.0}


def _ids(vocab=97):
    return torch.randint(0, vocab, (2, 17), generator=torch.Generator().manual_seed(1))


def max_logit_diff(ours, hf) -> float:
    with torch.no_grad():
        return (ours.eval()(_ids()) - hf(_ids()).logits).abs().max().item()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def openai_124m(**model):
    """init=openai_124m as the training scripts build it (the fake hub serves the weights)."""
    return build_model({"name": "openai_124m", "path": None}, {**SMALL, **model})


class _HubHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        hub = self.server
        hub.requests.append((self.path, self.headers.get("Range")))
        file = hub.root / self.path.lstrip("/")
        if not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        asked = self.headers.get("Range")
        start = int(asked.removeprefix("bytes=").removesuffix("-")) if asked and hub.ranges else 0
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in hub.cut:  # promise the whole body, send half, hang up
            hub.cut.discard(self.path)
            body = body[: len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Hub(ThreadingHTTPServer):
    """Serves ``root`` on 127.0.0.1, recording (path, Range) of every request."""

    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.root = root
        self.requests = []
        self.cut = set()  # paths whose next response stops half-way
        self.ranges = True  # whether Range requests are honoured

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def weight_requests(self):
        return [r for r in self.requests if r[0] == WEIGHTS_URL]


@contextmanager
def serving(root: Path, monkeypatch):
    """A :class:`Hub` serving ``root`` on 127.0.0.1 for the duration of the block."""
    server = Hub(root)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1")
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def serve_as_openai_124m(folder: Path, tmp_path: Path, monkeypatch):
    """Publish the GPT-2 folder ``folder`` as init=openai_124m on a fake hub, empty cache."""
    files = tmp_path / "hub" / REPO / "resolve" / REVISION
    files.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, files / name)
    weights = files / "model.safetensors"
    monkeypatch.setitem(HUB_WEIGHTS, "openai_124m", HubWeights(
        REPO, REVISION, sha256_of(weights), weights.stat().st_size, read_config(folder)))
    with serving(tmp_path / "hub", monkeypatch) as server:
        monkeypatch.setenv("GPT_LIGHTNING_HF_ENDPOINT", server.url)
        monkeypatch.setenv("GPT_LIGHTNING_CACHE", str(tmp_path / "cache"))
        monkeypatch.delenv("GPT_LIGHTNING_WEIGHTS_DIR", raising=False)
        server.cache = tmp_path / "cache" / "weights" / REPO
        yield server
