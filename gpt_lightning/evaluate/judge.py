"""Judged responses: a larger model behind an OpenAI-compatible chat endpoint scores each
response 0-100 given the instruction, the input and the reference output.

The client speaks ``POST <base_url>/chat/completions`` (Ollama, vLLM, llama.cpp's server,
OpenAI ...) with urllib: a timeout per request, retries with exponential backoff on
connection errors, timeouts, HTTP 429 and 5xx, and one clear error otherwise. A reply is
parsed for its first integer; one without an integer in 0..100 counts as unparseable.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from gpt_lightning.config.tasks import JUDGE_FIELDS, JudgeConfig
from gpt_lightning.errors import ConfigError, bad_value
from gpt_lightning.evaluate.files import bad_record, read_jsonl
from gpt_lightning.evaluate.tasks import Task, ratio

KEY = "judge.responses"
FIELDS = JUDGE_FIELDS
BUCKETS = [f"{10 * i}-{10 * i + 9}" for i in range(9)] + ["90-100"]
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class JudgeUnreachable(ConfigError):
    """Nothing answers at ``judge.base_url``."""


# ---- the client -------------------------------------------------------------------------------
class JudgeClient:
    """Chat completions against ``settings.base_url``, with retries and backoff."""

    def __init__(self, settings: JudgeConfig, sleep=time.sleep) -> None:
        self.s = settings
        self.url = settings.base_url.rstrip("/")
        self.sleep = sleep

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "User-Agent": "gpt_lightning"}
        token = os.environ.get(self.s.api_key_env) if self.s.api_key_env else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def reachable(self) -> str | None:
        """None when a server answers at ``base_url`` (any HTTP status), else why not."""
        request = urllib.request.Request(f"{self.url}/models", headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=min(self.s.timeout, 10)):
                return None
        except urllib.error.HTTPError:
            return None  # it answered
        except (urllib.error.URLError, OSError) as err:
            return str(getattr(err, "reason", err))

    def complete(self, prompt: str) -> str:
        """The judge's reply to one user message."""
        body = json.dumps({"model": self.s.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": self.s.temperature, "max_tokens": self.s.max_tokens}).encode()
        problem = ""
        for attempt in range(self.s.retries + 1):
            if attempt:
                self.sleep(self.s.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(f"{self.url}/chat/completions", data=body, headers=self._headers())
            try:
                with urllib.request.urlopen(request, timeout=self.s.timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                return str(payload["choices"][0]["message"]["content"])
            except urllib.error.HTTPError as err:
                if err.code != 429 and err.code < 500:
                    detail = err.read().decode("utf-8", "replace").strip().replace("\n", " ")[:200]
                    raise ConfigError(f"judge at {self.url} refused the request: HTTP {err.code} {detail} "
                                      f"(check judge.model={self.s.model!r} and judge.api_key_env)") from None
                problem = f"HTTP {err.code}"
            except (urllib.error.URLError, OSError) as err:  # refused, reset, timed out
                problem = str(getattr(err, "reason", err))
            except (ValueError, KeyError, IndexError, TypeError):
                problem = "a reply that is not a chat completion"
        raise JudgeUnreachable(f"judge at {self.url} failed {self.s.retries + 1} times (last: {problem}); "
                               "check judge.base_url or raise judge.retries / judge.timeout")


def parse_score(reply: str) -> int | None:
    """The first number in ``reply`` if it is an integer in 0..100, else None."""
    match = _NUMBER.search(reply)
    if match is None:
        return None
    value = float(match.group())
    return int(value) if value.is_integer() and 0 <= value <= 100 else None


def bucket(score: int) -> str:
    return BUCKETS[min(score // 10, 9)]


# ---- the task ---------------------------------------------------------------------------------
def load_responses(path: str | Path | None, limit: int | None = None) -> list[dict]:
    """Rows of a finetune.py ``responses.jsonl``: instruction, input, output (reference), response."""
    if not path:
        raise ConfigError("task=judge needs judge.responses=<responses.jsonl from finetune.py>")
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise bad_value(KEY, str(path), "an existing responses.jsonl (finetune.py writes one in its run folder)")
    rows = []
    for number, r in read_jsonl(file, KEY, limit):
        r = {"input": "", **r}
        missing = [f for f in FIELDS if not isinstance(r.get(f), str)]
        if missing:
            raise bad_record(KEY, file, number, f"needs string fields {missing}")
        rows.append({f: r[f] for f in FIELDS})
    return rows


class Judge(Task):
    """Scores responses with a judge model; needs no model of ours."""

    name = "judge"

    def __init__(self, responses: list[dict], settings: JudgeConfig, client: JudgeClient | None = None) -> None:
        super().__init__(responses)
        self.settings = settings
        self.client = client or JudgeClient(settings)

    def check_reachable(self) -> None:
        problem = self.client.reachable()
        if problem is not None:
            raise JudgeUnreachable(f"no judge answers at judge.base_url={self.settings.base_url} ({problem})")

    def run(self, model, items, *, batch_size, progress):
        rows = []
        for item in items:
            reply = self.client.complete(self.settings.prompt.format(**item))
            rows.append({**item, "reply": reply, "score": parse_score(reply)})
            progress(1)
        return rows

    def totals(self, rows):
        scores = [r["score"] for r in rows if r["score"] is not None]
        totals = {"n": len(rows), "scored": len(scores), "sum": sum(scores)}
        totals.update({f"bucket {b}": 0 for b in BUCKETS})
        for s in scores:
            totals[f"bucket {bucket(s)}"] += 1
        return totals

    def metrics(self, t):
        return [("score", ratio(t["sum"], t["scored"]), t["scored"]),
                ("unparseable", t["n"] - t["scored"], t["n"])]

    @staticmethod
    def distribution(totals: Mapping) -> dict[str, int]:
        return {b: int(totals[f"bucket {b}"]) for b in BUCKETS}


def judge_responses(path: Path, settings: JudgeConfig, out_file: Path | None = None) -> dict:
    """Score a responses.jsonl at the end of finetune.py; the result.json entries.

    ``eval/judge/score`` (mean over parsed replies), ``eval/judge/unparseable`` (a count) and
    ``judge_distribution`` (scores per bucket of 10); ``out_file`` gets one row per response.
    Raises JudgeUnreachable when nothing answers at the endpoint.
    """
    from gpt_lightning.evaluate.tasks import write_jsonl

    task = Judge(load_responses(path), settings)
    task.check_reachable()
    rows = task.run(None, task.items, batch_size=1, progress=lambda n: None)
    totals = task.totals(rows)
    if out_file is not None:
        write_jsonl(out_file, rows)
    result = {f"eval/judge/{metric}": value for metric, value, _ in task.metrics(totals)}
    return {**result, "judge_distribution": Judge.distribution(totals), "judge_model": settings.model,
            "judge_file": str(out_file) if out_file is not None else None}


def judge_after_fit(trainer, responses: Path, settings: JudgeConfig, out_file: Path) -> dict:
    """Judge finetune.py's responses; log ``eval/judge/*``. Unreachable: one line, run goes on."""
    import logging

    try:
        result = judge_responses(responses, settings, out_file)
    except JudgeUnreachable as err:
        logging.getLogger("gpt_lightning").warning("judge skipped: %s", err)
        return {"judge": f"skipped: {err}"}
    metrics = {k: v for k, v in result.items() if k.startswith("eval/") and v is not None}
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
    return result
