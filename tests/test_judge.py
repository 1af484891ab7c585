"""The judge against a fake OpenAI-compatible server on 127.0.0.1: retries with backoff,
timeouts, unparseable replies, mean and distribution, and skipping when nothing answers."""

import json
import logging
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from omegaconf import OmegaConf

from helpers import ROOT, compose_config
from gpt_lightning.cli.hydra_adapter import plain
from eval_fixtures import write_responses
from gpt_lightning import ConfigError
from gpt_lightning.config.schemas import parse
from gpt_lightning.config.tasks import JudgeConfig
from gpt_lightning.evaluate.judge import (Judge, JudgeClient, JudgeUnreachable, judge_after_fit, load_responses, parse_score)
from gpt_lightning.evaluate.tasks import evaluate

PROMPT = "I={instruction} N={input} O={output} R={response}"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": "judge-model"}]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        server = self.server
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.requests.append((self.path, request))
        action = server.script.pop(0) if server.script else None
        if isinstance(action, int):  # an HTTP error status
            self.send_error(action)
            return
        if action == "slow":  # longer than the client's timeout
            time.sleep(0.6)
        if action == "garbage":
            body = b"<html>not json</html>"
        else:
            prompt = request["messages"][0]["content"]
            body = json.dumps({"choices": [{"message": {"role": "assistant", "content": server.reply(prompt)}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:  # the client gave up (timeout)
            pass

    def log_message(self, *args):
        pass


@contextmanager
def fake_openai(reply, script=()):
    """A chat-completions server on 127.0.0.1; ``script`` lists what the first POSTs get
    (an HTTP status, "slow" or "garbage"), ``reply(prompt)`` the text of the others."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.requests, server.script, server.reply = [], list(script), reply
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


REPLIES = {"0": "Score: 85", "2": "I cannot grade this.", "4": "100", "6": "42/100", "8": "150"}  # by output


def reply_by_output(prompt):
    return REPLIES[prompt.split("O=")[1].split(" ")[0]]


def settings(url, **kw):
    """The YAML defaults with a test prompt, model and endpoint."""
    defaults = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "judge" / "default.yaml"))
    values = {**defaults, "base_url": url, "model": "judge-model", "prompt": PROMPT, "timeout": 5.0, "backoff": 0.5, **kw}
    return parse(JudgeConfig, values, "judge")


def test_scores_mean_distribution_unparseable_and_retries(tmp_path, monkeypatch):
    responses = load_responses(write_responses(tmp_path / "r.jsonl", n=5))  # outputs "0", "2", "4", "6", "8"
    sleeps = []
    with fake_openai(reply_by_output, script=[503, 429, "garbage"]) as (server, url):
        s = settings(url)
        task = Judge(responses, s, JudgeClient(s, sleep=sleeps.append))
        task.check_reachable()
        summary = evaluate(None, [task], progress=False, output_dir=tmp_path / "out")
    # first request: 503, 429, a non-JSON body, then an answer; waits 0.5, 1, 2 s in between
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(server.requests) == 5 + 3
    path, body = server.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == "judge-model" and body["temperature"] == 0.0
    assert body["messages"][0]["content"] == PROMPT.format(**responses[0])
    scores = {"0": 85, "2": None, "4": 100, "6": 42, "8": None}  # "2" has no number, "8" replied 150
    got = {(r["metric"]): (r["value"], r["n"]) for r in summary}
    parsed = [v for v in scores.values() if v is not None]
    assert got["score"] == (pytest.approx(sum(parsed) / len(parsed)), 3)
    assert got["unparseable"] == (2, 5)
    dist = Judge.distribution(task.last_totals)
    assert dist["80-89"] == 1 and dist["90-100"] == 1 and dist["40-49"] == 1 and sum(dist.values()) == 3
    rows = [json.loads(line) for line in (tmp_path / "out" / "judge.jsonl").read_text().splitlines()]
    assert [r["score"] for r in rows] == list(scores.values())


def test_timeout_is_retried_then_answered(tmp_path):
    with fake_openai(lambda p: "77", script=["slow"]) as (server, url):
        s = settings(url, timeout=0.2, backoff=0.0)
        assert JudgeClient(s).complete("hi") == "77"
    assert len(server.requests) == 2


def test_refusal_and_exhausted_retries_are_one_line(tmp_path):
    with fake_openai(lambda p: "1", script=[404]) as (_, url):
        with pytest.raises(ConfigError, match=r"refused the request: HTTP 404 .*judge.model='judge-model'"):
            JudgeClient(settings(url)).complete("hi")
    with fake_openai(lambda p: "1", script=[500, 502, 503]) as (server, url):
        with pytest.raises(JudgeUnreachable, match=r"failed 3 times \(last: HTTP 503\)"):
            JudgeClient(settings(url, retries=2, backoff=0.0)).complete("hi")
    assert len(server.requests) == 3


def test_parse_score():
    assert [parse_score(r) for r in ("90", " 7.", "Score: 12/100", "100!", "-3", "101", "4.5", "none")] == [
        90, 7, 12, 100, None, None, None, None]


def test_evaluate_task_judge_in_process(tmp_path, capsys):
    import gpt_lightning.cli.hydra_adapter  # noqa: F401 (registers the config's resolver)
    from gpt_lightning.evaluate.job import run

    path = write_responses(tmp_path / "r.jsonl", n=3)
    with fake_openai(lambda p: "60") as (server, url):
        cfg = plain(compose_config("evaluate", [
            "task=judge", f"judge.responses={path}", f"judge.base_url={url}", "judge.model=judge-model", "progress=false"]))
        summary = run(cfg, tmp_path / "run")
    assert summary == [{"task": "judge", "metric": "score", "value": 60.0, "n": 3},
                       {"task": "judge", "metric": "unparseable", "value": 0, "n": 3}]
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary
    assert "judge scores: " in capsys.readouterr().out and len(server.requests) == 3


def test_finetune_judge_skips_with_one_line_when_unreachable(tmp_path, caplog):
    path = write_responses(tmp_path / "r.jsonl", n=2)
    s = settings("http://127.0.0.1:9/v1")  # nothing listens on the discard port
    trainer = SimpleNamespace(loggers=[], global_step=3)
    with caplog.at_level(logging.WARNING, logger="gpt_lightning"):
        result = judge_after_fit(trainer, path, s, tmp_path / "judge.jsonl")
    assert result["judge"].startswith("skipped: no judge answers at judge.base_url=http://127.0.0.1:9/v1")
    assert [r.getMessage() for r in caplog.records] == [f"judge skipped: {result['judge'].removeprefix('skipped: ')}"]
    assert not (tmp_path / "judge.jsonl").exists()


def test_finetune_judge_logs_scores(tmp_path):
    path = write_responses(tmp_path / "r.jsonl", n=2)
    logged = []
    trainer = SimpleNamespace(loggers=[SimpleNamespace(log_metrics=lambda m, step: logged.append((m, step)))],
                              global_step=7)
    with fake_openai(lambda p: "80") as (_, url):
        result = judge_after_fit(trainer, path, settings(url), tmp_path / "judge.jsonl")
    assert result["eval/judge/score"] == 80.0 and result["eval/judge/unparseable"] == 0
    assert logged == [({"eval/judge/score": 80.0, "eval/judge/unparseable": 0}, 7)]
    assert len((tmp_path / "judge.jsonl").read_text().splitlines()) == 2


def test_finetune_judge_settings_are_checked(tmp_path):
    from gpt_lightning.config.schemas import train_spec

    with pytest.raises(ConfigError, match=r"judge.retries=-1 is invalid: an integer >= 0"):
        train_spec(plain(compose_config("finetune", ["judge.enabled=true", "judge.retries=-1"])))
    with pytest.raises(ConfigError, match=r"needs finetune.responses.enabled=true"):
        train_spec(plain(compose_config("finetune", ["judge.enabled=true", "finetune.responses.enabled=false"])))
    assert train_spec(plain(compose_config("finetune", []))).judge is None  # off by default
