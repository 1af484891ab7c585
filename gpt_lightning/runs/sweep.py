"""After a multirun (cli/hydra_adapter.SweepSummary calls it), one table of every job's result in
the sweep folder, and the plot of their validation losses against tokens (``compare.png``, see compare.py) linked from it."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from gpt_lightning.runs.files import RESULT_FILE
COLUMNS = ("job", "overrides", "params", "best_val_loss", "best_val_perplexity", "final_val_loss",
           "tokens_seen", "time_s", "status")
EVAL_PREFIXES = ("eval/", "best_eval/")  # callbacks.eval and judge scores: one column each, before status


MAX_NAME = 120  # characters of a job folder's name from its overrides (file systems allow 255 bytes)


def job_folder_name(overrides: str) -> str:
    """A job folder's name from its overrides (``hydra.job.override_dirname``): one flat, portable
    name for any value (paths, quotes, spaces), so a ``data.path=/x/y.txt`` job never nests
    folders. Characters other than letters, digits and ``.,-_=+`` become ``_``; a long name is cut
    and ends with a hash of the whole, so names stay distinct."""
    name = re.sub(r"[^A-Za-z0-9.,=+_-]", "_", str(overrides))
    if len(name) > MAX_NAME:
        name = name[: MAX_NAME - 9] + "-" + hashlib.sha1(str(overrides).encode()).hexdigest()[:8]
    return name


def failed(rows: list[dict]) -> list[dict]:
    return [row for row in rows if str(row.get("status") or "").startswith("failed")]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def summarize(sweep_dir: Path) -> list[dict]:
    """Rows from each job folder's result.json (a job that died gets a 'failed' row)."""
    rows = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: (len(p.name.split("_")[0]), p.name)):
        result = job / RESULT_FILE
        if result.is_file():
            try:
                row = json.loads(result.read_text())
                row = row if isinstance(row, dict) else {"status": "failed (unreadable result.json)"}
            except (OSError, ValueError):
                row = {"status": "failed (unreadable result.json)"}
            row.setdefault("status", "ok")
        else:
            row = {"status": "failed (no result.json)"}
        rows.append({"job": job.name, **{k: row.get(k) for k in COLUMNS if k != "job"},
                     **{k: v for k, v in row.items() if k.startswith(EVAL_PREFIXES)}})
    return rows


def columns(rows: list[dict]) -> list[str]:
    extra = sorted({k for row in rows for k in row if k.startswith(EVAL_PREFIXES)},
                   key=lambda k: (k.removeprefix("best_"), k.startswith("best_")))
    return [*COLUMNS[:-1], *extra, COLUMNS[-1]]


def write_summary(sweep_dir: Path) -> str:
    rows = summarize(sweep_dir)
    names = columns(rows)
    with open(sweep_dir / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (" ".join(v) if isinstance(v, list) else v) for k, v in row.items()})
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows:
        cells = [" ".join(row[k]) if isinstance(row.get(k), list) else _fmt(row.get(k)) for k in names]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    plot = _plot(sweep_dir)
    if plot is not None:
        table += (f"\n![validation loss against tokens seen]({plot.name})\n\n"
                  f"Redraw or compare with other runs: `python -m gpt_lightning.runs.compare {sweep_dir}`\n")
    (sweep_dir / "summary.md").write_text(table)
    return table


def _plot(sweep_dir: Path) -> Path | None:
    """``compare.png`` of the jobs that finished, or None when none has a validation curve."""
    from gpt_lightning.runs.compare import compare
    from gpt_lightning.errors import ConfigError

    try:
        return compare([sweep_dir])[1]
    except ConfigError:  # no job finished
        return None
