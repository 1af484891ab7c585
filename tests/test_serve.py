"""serve.py's server on 127.0.0.1: the official openai client (completions, chat, streaming,
errors), replies equal to generating each request alone (16 concurrent requests; 32 requests
from 8 clients), the queue limit, clients going away, SIGTERM, and the config checks.

The model is a tiny random GPT with the GPT-2 vocabulary, served from an export folder as
``init=checkpoint`` would load it; the reference is ``generate`` on a second copy."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest
import torch
from helpers import ROOT, compose_config

from gpt_lightning.weights.hf_io import load_pretrained, save_pretrained
from gpt_lightning import GPT, ConfigError, GPTConfig
from gpt_lightning.generate.sampling import generate, to_inference_layout, trim_at_stop

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from gpt_lightning.generate.prompts import chat_prompt, encode  # noqa: E402
from gpt_lightning.serve.routes import ServeSettings, create_app  # noqa: E402
from gpt_lightning.cli.hydra_adapter import plain  # noqa: E402
from gpt_lightning.serve.job import check_config, require_server_libs  # noqa: E402
from gpt_lightning.serve.scheduler import Sampling, Scheduler, Sequence  # noqa: E402
from gpt_lightning.serve.server import background_server  # noqa: E402
from gpt_lightning.generate.sampling import StopCriteria  # noqa: E402

CONTEXT = 128
NAME = "tiny"
CAP = 100


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second OpenMP thread costs more than it gives


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A random 2-layer GPT with the GPT-2 vocabulary and weights wide enough that its text varies."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_embd=64, n_layers=2, n_heads=2, context_length=CONTEXT))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return save_pretrained(model, tmp_path_factory.mktemp("serve_export"))


def load(export) -> GPT:
    return to_inference_layout(load_pretrained(export).eval())  # as serve.py loads it on a CPU


@pytest.fixture(scope="module")
def reference(export):
    return load(export)


def make_app(export, tokenizer, *, max_batch_size=16, queue_size=64, **limits):
    scheduler = Scheduler(load(export), max_batch_size=max_batch_size, queue_size=queue_size)
    settings = ServeSettings(model_name=NAME, max_tokens_cap=CAP, **{"default_max_tokens": 16, **limits},
                             retry_after=3)
    return create_app(scheduler, tokenizer, settings), scheduler


@pytest.fixture(scope="module")
def server(export, tokenizer):
    app, scheduler = make_app(export, tokenizer)
    with background_server(app) as url:
        yield url, scheduler


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", timeout=60, max_retries=0)


def solo(reference, tok, ids, max_tokens, *, stop=(), seed=None, temperature=1.0, top_k=0, top_p=1.0,
         repetition_penalty=1.0) -> tuple[str, int]:
    """(text, new tokens) of ``ids`` generated alone, as generate.py makes them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a budget cut by the context is cut the same way by the server
        out = generate(reference, [ids], max_new_tokens=max_tokens, temperature=temperature, top_k=top_k,
                       top_p=top_p, repetition_penalty=repetition_penalty, eos_id=tok.eot_id,
                       stop_sequences=list(stop), decode=tok.decode, seed=seed)[0]
    return trim_at_stop(tok.decode([t for t in out if t != tok.eot_id]), list(stop)), len(out) - (out[-1] == tok.eot_id)


def chat_ids(tok, messages, max_tokens):
    turns = [m for m in messages if m["role"] != "system"]
    history = [(turns[i]["content"], turns[i + 1]["content"].strip()) for i in range(0, len(turns) - 1, 2)]
    return chat_prompt(tok, history, turns[-1]["content"], CONTEXT - max_tokens)


# ---- the openai client ---------------------------------------------------------------------
def test_models_completions_and_chat_with_the_openai_client(client, reference, tokenizer):
    assert [m.id for m in client.models.list()] == [NAME]

    out = client.completions.create(model=NAME, prompt="The meaning of life is", max_tokens=12, temperature=0)
    text, count = solo(reference, tokenizer, tokenizer.encode("The meaning of life is"), 12, temperature=0)
    assert out.choices[0].text == text and len(set(text.split())) > 2  # varied text: positions matter
    assert out.usage.completion_tokens == count and out.usage.prompt_tokens == 5

    # sampling: choice i draws with seed + i, as generate.py's completion i
    out = client.completions.create(model=NAME, prompt=["Once upon", "A B C"], max_tokens=10, temperature=0.9,
                                    top_p=0.95, seed=42, n=2, stop=["\n"], extra_body={"top_k": 40})
    for i, choice in enumerate(out.choices):
        prompt = ["Once upon", "A B C"][i // 2]
        assert choice.index == i
        assert choice.text == solo(reference, tokenizer, tokenizer.encode(prompt), 10, stop=["\n"], seed=42 + i,
                                   temperature=0.9, top_p=0.95, top_k=40)[0]
    assert out.choices[0].text != out.choices[1].text

    messages = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": " Blue. "},
                {"role": "user", "content": "And another?"}]
    out = client.chat.completions.create(model=NAME, messages=messages, max_tokens=9, temperature=0.7, seed=5,
                                         extra_body={"repetition_penalty": 1.3})
    expected = solo(reference, tokenizer, chat_ids(tokenizer, messages, 9), 9, seed=5, temperature=0.7,
                    repetition_penalty=1.3)
    assert out.choices[0].message.role == "assistant"
    assert (out.choices[0].message.content, out.usage.completion_tokens) == expected
    assert out.choices[0].finish_reason == ("length" if expected[1] == 9 else "stop")

    # a system message replaces the template's preamble
    out = client.chat.completions.create(model=NAME, messages=[{"role": "system", "content": "Be brief."},
                                                               {"role": "user", "content": "Hi"}],
                                         max_tokens=6, temperature=0)
    ids = encode(tokenizer, "Be brief.\n\n### Instruction:\nHi\n\n### Response:\n")
    assert out.choices[0].message.content == solo(reference, tokenizer, ids, 6, temperature=0)[0]


def test_streams_add_up_to_the_whole_answer(client, reference, tokenizer):
    stream = client.completions.create(model=NAME, prompt="Streaming works", max_tokens=20, temperature=0,
                                       stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    texts = [c.choices[0].text for c in chunks if c.choices]
    expected, count = solo(reference, tokenizer, tokenizer.encode("Streaming works"), 20, temperature=0)
    assert "".join(texts) == expected and len([t for t in texts if t]) > 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == count == 20

    messages = [{"role": "user", "content": "Tell me a story."}]
    stream = client.chat.completions.create(model=NAME, messages=messages, max_tokens=15, temperature=1.0,
                                            seed=9, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert content == solo(reference, tokenizer, chat_ids(tokenizer, messages, 15), 15, seed=9)[0]


# ---- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("path, body, status, param", [
    ("completions", b"{not json", 400, None),
    ("completions", {"prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ("completions", {"prompt": "x", "max_tokens": True}, 400, "max_tokens"),
    ("completions", {"prompt": "x", "max_tokens": CAP + 1}, 400, "max_tokens"),
    ("completions", {"prompt": "x", "top_p": 0}, 400, "top_p"),
    ("completions", {"prompt": "x", "tempreature": 1}, 400, "tempreature"),
    ("completions", {"prompt": "x", "frequency_penalty": 0.5}, 400, "frequency_penalty"),
    ("completions", {"prompt": "x " * CONTEXT}, 400, "prompt"),
    ("completions", {"prompt": [50257]}, 400, "prompt"),
    ("completions", {}, 400, "prompt"),
    ("completions", {"prompt": "x", "model": "gpt-4"}, 404, "model"),
    ("chat/completions", {"messages": [{"role": "assistant", "content": "hi"}]}, 400, "messages"),
    ("chat/completions", {"messages": [{"role": "user", "content": "x " * CONTEXT}]}, 400, "messages"),
    ("chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
    # abuse: deep nesting, non-JSON numbers, infinite values, lone surrogates, a body that is no object, a huge body
    ("completions", b"[" * 100_000 + b"]" * 100_000, 400, None),
    ("completions", b'{"prompt": "x", "temperature": Infinity}', 400, None),
    ("completions", b'{"prompt": "x", "temperature": 1e999}', 400, "temperature"),
    ("completions", b'{"prompt": "\\ud800 lone"}', 400, "prompt"),
    ("chat/completions", b'{"messages": [{"role": "user", "content": "\\udfff"}]}', 400, "messages"),
    ("completions", b"[1, 2, 3]", 400, None),
    ("completions", {"prompt": "x" * 1_100_000}, 413, None),
])
def test_bad_requests_get_openai_style_errors(server, path, body, status, param):
    data = body if isinstance(body, bytes) else json.dumps(body)
    response = httpx.post(f"{server[0]}/v1/{path}", content=data, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]
    assert "Input should" not in error["message"] and "None=" not in error["message"]  # no pydantic wording


def test_api_key_timeouts_and_the_chat_default_on_a_128_token_model(export, tokenizer):
    """api_key: 401s in OpenAI's format, /health stays open; a connection that sends no whole
    request head within request_timeout is closed; a chat without max_tokens fits the model
    even with default_max_tokens equal to its context (the chat page sends none)."""
    import socket

    key = "s3cret-key-for-tests"
    app, _ = make_app(export, tokenizer, api_key=key, default_max_tokens=CONTEXT, request_timeout=1.0)
    with background_server(app, request_timeout=1.0) as url:
        chat = {"messages": [{"role": "user", "content": "Hello there"}], "temperature": 0}
        for headers, message in (({}, "You didn't provide an API key"), ({"Authorization": "Bearer wrong"},
                                                                          "Incorrect API key provided")):
            response = httpx.post(f"{url}/v1/chat/completions", json=chat, headers=headers, timeout=30)
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
            assert response.json()["error"]["message"].startswith(message)
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, timeout=60, max_retries=0)
        out = client.chat.completions.create(model=NAME, messages=chat["messages"], temperature=0)
        assert out.usage.completion_tokens >= 1  # the default left room for the conversation
        host, port = url.removeprefix("http://").split(":")
        for sent in (b"", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"):  # idle, and a head never finished
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(sent)
                start = time.monotonic()
                assert sock.recv(1024) == b""  # closed by the server
                assert time.monotonic() - start < 5


def test_errors_reach_the_client_and_the_server_keeps_serving(client):
    with pytest.raises(openai.BadRequestError, match="context_length is 128"):
        client.completions.create(model=NAME, prompt="word " * 200, max_tokens=5)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert client.completions.create(model=NAME, prompt="Still here", max_tokens=3).usage.completion_tokens == 3


def test_full_queue_answers_429_with_retry_after(export, tokenizer):
    app, scheduler = make_app(export, tokenizer, max_batch_size=1, queue_size=1)
    gate, started = threading.Event(), threading.Event()

    def slow_client(kind, value):  # holds the scheduler at its first token
        started.set()
        gate.wait(30)

    with background_server(app) as url:
        try:
            scheduler.submit([Sequence([1, 2], 5, Sampling(0.0), StopCriteria(None), None, slow_client)])
            assert started.wait(30)
            scheduler.submit([Sequence([3], 5, Sampling(0.0), StopCriteria(None), None, lambda k, v: None)])
            response = httpx.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=30)
            assert response.status_code == 429 and response.headers["retry-after"] == "3"
            assert response.json()["error"]["type"] == "rate_limit_error"
        finally:
            gate.set()
        response = httpx.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=30)
        assert response.status_code == 200


def test_a_client_going_away_cancels_its_sequence(server):
    url, scheduler = server
    seen, submit = [], scheduler.submit

    def recording_submit(sequences):
        seen.extend(sequences)
        submit(sequences)

    step = scheduler._step

    def slow_step():  # 100 tokens take seconds, so the client is gone long before the last one
        threading.Event().wait(0.03)
        step()

    scheduler.submit, scheduler._step = recording_submit, slow_step
    try:
        with httpx.stream("POST", f"{url}/v1/completions", timeout=30,
                          json={"prompt": "a", "max_tokens": CAP, "temperature": 0, "stream": True}) as response:
            next(response.iter_lines())
    finally:
        del scheduler.submit
    for _ in range(400):
        if seen[0].finish_reason:
            break
        threading.Event().wait(0.05)
    del scheduler._step
    assert seen[0].finish_reason == "cancelled" and len(seen[0].new) < CAP


def test_a_waiting_request_whose_client_left_is_dropped_unrun(server):
    url, scheduler = server
    gate, started, seen, submit = threading.Event(), threading.Event(), [], scheduler.submit

    def slow_client(kind, value):  # holds the scheduler, so the next request has to wait
        started.set()
        gate.wait(30)

    scheduler.submit = lambda sequences: (seen.extend(sequences), submit(sequences))
    try:
        submit([Sequence([1, 2], 2, Sampling(0.0), StopCriteria(None), None, slow_client)])
        assert started.wait(30)
        with pytest.raises(httpx.ReadTimeout):  # a whole (not streamed) answer: the client gives up
            httpx.post(f"{url}/v1/completions", json={"prompt": "a", "max_tokens": 5}, timeout=httpx.Timeout(30, read=1))
    finally:
        del scheduler.submit
        for _ in range(200):
            if seen and seen[0].cancelled:
                break
            threading.Event().wait(0.05)
        gate.set()
    for _ in range(200):
        if seen[0].finish_reason:
            break
        threading.Event().wait(0.05)
    assert seen[0].finish_reason == "cancelled" and seen[0].new == []


# ---- many clients ----------------------------------------------------------------------------
def random_request(rng: random.Random, i: int) -> dict:
    words = "the of a cat sat on mat and then it rained over hills far away".split()
    text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 25)))
    kind = ("greedy", "sample", "penalty")[i % 3]
    settings = {"greedy": {"temperature": 0}, "sample": {"temperature": 0.9, "top_k": 30, "seed": 1000 + i},
                "penalty": {"temperature": 1.0, "top_p": 0.9, "repetition_penalty": 1.2, "seed": 2000 + i}}[kind]
    return {"chat": i % 4 == 3, "text": text, "max_tokens": rng.randint(1, 24), "stream": i % 2 == 0,
            "stop": [" the"] if i % 5 == 0 else [], **settings}


def ask(client, req) -> str:
    extra = {k: req[k] for k in ("top_k", "repetition_penalty") if k in req}
    common = dict(model=NAME, max_tokens=req["max_tokens"], temperature=req["temperature"], top_p=req.get("top_p", 1.0),
                  seed=req.get("seed"), stop=req["stop"] or None, stream=req["stream"], extra_body=extra)
    if req["chat"]:
        out = client.chat.completions.create(messages=[{"role": "user", "content": req["text"]}], **common)
        if req["stream"]:
            return "".join(c.choices[0].delta.content or "" for c in out)
        return out.choices[0].message.content
    out = client.completions.create(prompt=req["text"], **common)
    return "".join(c.choices[0].text for c in out) if req["stream"] else out.choices[0].text


def expected(reference, tok, req) -> str:
    ids = (chat_ids(tok, [{"role": "user", "content": req["text"]}], req["max_tokens"]) if req["chat"]
           else tok.encode(req["text"]))
    keys = ("temperature", "top_k", "top_p", "repetition_penalty", "seed")
    return solo(reference, tok, ids, req["max_tokens"], stop=req["stop"], **{k: req[k] for k in keys if k in req})[0]


def run_clients(client, requests: list[dict], clients: int) -> list:
    """Send ``requests`` from ``clients`` threads (each takes the next one when done)."""
    answers, lock, order = [None] * len(requests), threading.Lock(), iter(range(len(requests)))
    start = threading.Barrier(clients)

    def worker():
        start.wait(30)
        while True:
            with lock:
                i = next(order, None)
            if i is None:
                return
            try:
                answers[i] = ask(client, requests[i])
            except Exception as err:  # noqa: BLE001 - reported below, with the request
                answers[i] = err

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "clients still waiting after 120 s"
    return answers


def test_16_concurrent_requests_each_equal_its_solo_generation(client, reference, tokenizer):
    rng = random.Random(16)
    requests = [random_request(rng, i) for i in range(16)]
    answers = run_clients(client, requests, clients=16)
    for req, answer in zip(requests, answers):
        assert answer == expected(reference, tokenizer, req), req


def test_load_32_requests_from_8_clients_no_error_and_solo_replies(client, server, reference, tokenizer):
    rng = random.Random(32)
    requests = [random_request(rng, i) for i in range(32)]
    answers = run_clients(client, requests, clients=8)
    errors = [(req, a) for req, a in zip(requests, answers) if isinstance(a, Exception)]
    assert not errors
    for req, answer in zip(requests, answers):
        assert answer == expected(reference, tokenizer, req), req
    assert server[1].counts() == {"running": 0, "waiting": 0}


# ---- serve.py ---------------------------------------------------------------------------------
def test_config_checks_name_the_key(tmp_path):
    base = ["init=checkpoint", "init.path=/nowhere"]
    for override, key in [("port=70000", "port"), ("max_batch_size=0", "max_batch_size"),
                          ("queue_size=-1", "queue_size"), ("default_max_tokens=5000", "default_max_tokens"),
                          ("shutdown_timeout=0", "shutdown_timeout"), ("log_level=loud", "log_level"),
                          ("host=''", "host")]:
        cfg = plain(compose_config("serve", [*base, override]))
        with pytest.raises(ConfigError, match=rf"^{key}=.* is invalid"):
            check_config(cfg)
    check_config(plain(compose_config("serve", base)))


def test_missing_server_libraries_name_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    with pytest.raises(ConfigError, match=r'needs fastapi, which are not installed: pip install -e "\.\[serve\]"'):
        require_server_libs()


def test_serve_yaml_keys_have_comments():
    for line in (ROOT / "conf" / "serve.yaml").read_text().splitlines():
        if line.strip() and not line.startswith((" ", "#", "defaults:", "hydra:")):
            assert "  # " in line, f"serve.yaml: key without a comment: {line}"


def test_serve_py_bad_value_then_sigterm_finishes_the_request_in_flight(tmp_path, export, tokenizer):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    bad = subprocess.run([sys.executable, str(ROOT / "serve.py"), "init=checkpoint", f"init.path={export}",
                          "max_tokens_cap=0"], cwd=tmp_path, env=env, text=True, capture_output=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr == "error: max_tokens_cap=0 is invalid: an integer >= 1\n"

    proc = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "init=checkpoint", f"init.path={export}",
                             "port=0", "device=cpu", "log_level=warning", "model_name=tiny"],
                            cwd=tmp_path, env=env, text=True, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        line = proc.stderr.readline()
        url = re.search(r"at (http://127\.0\.0\.1:\d+) ", line).group(1)
        body = {"model": "tiny", "prompt": "Hello", "max_tokens": CAP, "temperature": 0, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as response:
            lines = (x for x in response.iter_lines() if x)
            first = next(lines)
            proc.send_signal(signal.SIGTERM)
            rest = list(lines)
        events = [json.loads(x[6:]) for x in [first, *rest] if x.startswith("data: {")]
        assert rest[-1] == "data: [DONE]"
        assert sum(bool(e["choices"][0]["text"]) for e in events) > 1
        assert events[-1]["choices"][0]["finish_reason"] == "length"
        assert proc.wait(60) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- the chat page in a browser ----------------------------------------------------------
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


@pytest.fixture
def browser(tmp_path):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        pytest.skip(f"no headless browser: {', '.join(missing)} missing; install Debian's packages with "
                    "`apt-get install chromium chromium-driver` (`make test` does so when run as root)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_chat_page_streams_replies_and_keeps_the_conversation(browser, server, reference, tokenizer):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server[0] + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "model").text == NAME)  # from /v1/models
    browser.execute_script("document.getElementById('temperature').value = '0';"
                           "document.getElementById('max_tokens').value = '12';")
    history = []
    for n, message in enumerate(["Hello there", "Tell me more"], 1):
        browser.find_element(By.ID, "input").send_keys(message)
        browser.find_element(By.ID, "send").click()
        WebDriverWait(browser, 60).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".assistant[data-done='true']")) == n)
        reply = browser.find_elements(By.CSS_SELECTOR, ".assistant")[-1]
        turns = [*history, {"role": "user", "content": message}]
        text, count = solo(reference, tokenizer, chat_ids(tokenizer, turns, 12), 12, temperature=0)
        assert reply.get_attribute("textContent") == text
        assert int(reply.get_attribute("data-chunks")) > 1  # it grew chunk by chunk
        stats = browser.find_elements(By.CSS_SELECTOR, ".stats")[-1].text
        assert re.fullmatch(rf"{count} tokens in [\d.]+ s, [\d.]+ tokens/s \(first token after [\d.]+ s\)", stats)
        history += [{"role": "user", "content": message}, {"role": "assistant", "content": text}]
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".user")] == ["Hello there", "Tell me more"]
