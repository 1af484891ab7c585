"""What every evaluation task has in common, and the loop that runs a list of them.

A task holds its prepared items. ``run`` turns a slice of them into per-item result rows,
``totals`` adds rows up into sums (counts, log-likelihoods), and ``metrics`` turns sums into
``(metric, value, n)``. Because metrics only come from sums, items can be split across DDP
ranks and the sums reduced: the score is that of one process scoring every item.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

from gpt_lightning.atomic import atomic_write
from gpt_lightning.evaluate.scoring import BATCH_SIZE, Pair, Scored, score_groups

Metric = tuple[str, float | None, int]  # (metric name, value, items it is over)
SUMMARY_FILE = "summary.json"


class Task:
    """Base class: ``name``, ``items`` and the three steps (see the module docstring)."""

    name = "task"

    def __init__(self, items: list) -> None:
        self.items = items
        self.last_totals: dict[str, float] = {}  # of the last evaluate() run, over all ranks

    def run(self, model, items: list, *, batch_size: int, progress: Callable[[int], None]) -> list[dict]:
        raise NotImplementedError

    def totals(self, rows: list[dict]) -> dict[str, float]:
        raise NotImplementedError

    def metrics(self, totals: dict[str, float]) -> list[Metric]:
        raise NotImplementedError


class ScoringTask(Task):
    """A task scored by continuation log-probabilities: ``groups`` of pairs in, ``rows`` out."""

    def groups(self, items: list) -> list[list[Pair]]:
        raise NotImplementedError

    def rows(self, items: list, scored: list[list[Scored]]) -> list[dict]:
        raise NotImplementedError

    def run(self, model, items, *, batch_size, progress):
        return self.rows(items, score_groups(model, self.groups(items), batch_size=batch_size, progress=progress))


def ratio(num: float, den: float) -> float | None:
    return num / den if den else None


@contextmanager
def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr counting items (with items/s), or a no-op."""
    if not enabled:
        yield lambda n: None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True) as bar:
        yield bar.update


def evaluate(model, tasks: Sequence[Task], *, batch_size: int = BATCH_SIZE, progress: bool = True,
             rank: int = 0, world_size: int = 1,
             reduce: Callable[[dict[str, float]], dict[str, float]] | None = None,
             output_dir: str | Path | None = None) -> list[dict]:
    """Run every task; return the summary, a list of ``{"task", "metric", "value", "n"}``.

    Rank ``r`` of ``world_size`` scores items ``r, r + world_size, ...``; ``reduce`` sums the
    totals over ranks (all ranks must call this). With ``output_dir`` (rank 0 only writes),
    ``summary.json`` and one ``<task>.jsonl`` of per-item rows (this rank's) are written.
    """
    summary = []
    out = Path(output_dir) if output_dir is not None else None
    for task in tasks:
        items = task.items[rank::world_size]
        with progress_bar(len(items), task.name, progress and rank == 0) as update:
            rows = task.run(model, items, batch_size=batch_size, progress=update)
        totals = task.totals(rows)
        if reduce is not None:
            totals = reduce(totals)
        task.last_totals = totals
        summary += [{"task": task.name, "metric": metric, "value": value, "n": int(n)}
                    for metric, value, n in task.metrics(totals)]
        if out is not None and rank == 0:
            write_jsonl(out / f"{task.name}.jsonl", rows)
    if out is not None and rank == 0:
        atomic_write(out / SUMMARY_FILE, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2) + "\n"))
    return summary


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    return atomic_write(path, write)


def format_table(summary: list[dict], notes: dict[tuple[str, str], str] | None = None) -> str:
    """The summary as an aligned text table; ``notes[(task, metric)]`` adds a last column."""
    notes = notes or {}
    head = ["task", "metric", "value", "n"] + (["reference"] if notes else [])
    body = []
    for row in summary:
        value = row["value"]
        value = "n/a" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:.4f}"
        cells = [row["task"], row["metric"], value, f"{row['n']:,}"]
        if notes:
            cells.append(notes.get((row["task"], row["metric"]), ""))
        body.append(cells)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    align = lambda cells: "  ".join(c.rjust(w) if i in (2, 3) else c.ljust(w)  # noqa: E731
                                    for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([align(head), align(["-" * w for w in widths]), *map(align, body)])
