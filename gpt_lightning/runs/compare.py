"""Compare runs: one table and one plot of validation loss against tokens seen.

    python -m gpt_lightning.runs.compare outputs/train/*            # run folders
    python -m gpt_lightning.runs.compare multirun/train/<date_time>  # every job of a sweep

A run folder is one with ``result.json`` (written at the end of train.py / finetune.py); its
curve comes from ``history.json``. A folder without ``result.json`` is read as a sweep: each
run folder directly inside it is a run. The plot goes to ``<sweep>/compare.png`` for a single
sweep folder, else ``compare.png`` in the working folder (``--out`` chooses).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from gpt_lightning.errors import ConfigError, bad_value, main_guard
from gpt_lightning.runs.files import HISTORY_FILE, PLOT_FILE, RESULT_FILE
COLUMNS = ("run", "label", "params", "best_val_loss", "best_val_perplexity", "final_val_loss", "tokens_seen",
           "time_s", "tokens_per_s")


log = logging.getLogger("gpt_lightning")


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders among ``paths``: each path itself, or the run folders directly inside it."""
    runs: list[Path] = []
    for path in paths:
        path = Path(path).expanduser()
        if not path.is_dir():
            raise bad_value("path", str(path), "a run folder (with result.json) or a sweep folder of them")
        if (path / RESULT_FILE).is_file():
            runs.append(path)
            continue
        inside = sorted((p for p in path.iterdir() if (p / RESULT_FILE).is_file()),
                        key=lambda p: (len(p.name.split("_")[0]), p.name))
        if not inside:
            raise bad_value("path", str(path), f"no {RESULT_FILE} in it or in the folders inside it; "
                            "give finished runs (outputs/train/<run>) or a sweep folder (multirun/train/<date>)")
        runs.extend(inside)
    return runs


def load_run(run: Path) -> dict:
    """A run's result.json plus its validation curve [(tokens, loss), ...] from history.json.

    A file that cannot be read (cut short, edited by hand) is said in the run's row and in one
    warning line; the other runs are compared all the same."""
    try:
        row = json.loads((run / RESULT_FILE).read_text())
        if not isinstance(row, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        log.warning("%s cannot be read (%s); its row is empty", run / RESULT_FILE, _short(err))
        row = {"status": f"unreadable {RESULT_FILE}"}
    history = run / HISTORY_FILE
    try:
        row["val_curve"] = [(t, v) for t, v, *_ in json.loads(history.read_text())["val"]] if history.is_file() else []
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("%s cannot be read (%s); the run has no curve", history, _short(err))
        row["val_curve"] = []
    row["run"] = run.name
    return row


def _short(err: Exception) -> str:
    return " ".join(str(err).split())[:120]


def label_runs(rows: list[dict]) -> None:
    """``row["label"]``: the overrides in which a run differs from the others (else its folder name)."""
    common = set.intersection(*(set(row.get("overrides") or []) for row in rows)) if len(rows) > 1 else set()
    for row in rows:
        differs = [o for o in row.get("overrides") or [] if o not in common]
        row["label"] = " ".join(differs) if differs and len(rows) > 1 else row["run"]


DIGITS = {"best_val_loss": 4, "final_val_loss": 4, "best_val_perplexity": 2, "time_s": 1, "tokens_per_s": 0}


def _fmt(key: str, value) -> str:
    if isinstance(value, float):
        return f"{value:,.{DIGITS.get(key, 4)}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(k, row.get(k)) for k in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str | None = None) -> Path:
    """Validation loss against tokens seen, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for row in rows:
        if row["val_curve"]:
            ax.plot([t for t, _ in row["val_curve"]], [v for _, v in row["val_curve"]], "o-", label=row["label"],
                    markersize=3)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("validation loss")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def compare(paths: list[Path], out: Path | None = None) -> tuple[str, Path | None]:
    """(markdown table, plot path or None when no run has a validation curve)."""
    runs = find_runs([Path(p) for p in paths])
    rows = [load_run(run) for run in runs]
    label_runs(rows)
    if out is None:
        single_sweep = len(paths) == 1 and not (Path(paths[0]) / RESULT_FILE).is_file()
        out = Path(paths[0]) / PLOT_FILE if single_sweep else Path(PLOT_FILE)
    has_curve = any(row["val_curve"] for row in rows)
    title = str(paths[0]) if len(paths) == 1 else None
    return table(rows), plot(rows, Path(out), title) if has_curve else None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit code 2, like every entry point
        raise ConfigError(f"{message}; usage: python -m gpt_lightning.runs.compare RUN_OR_SWEEP [...] [--out FILE]")


def main(argv: list[str] | None = None):
    parser = _Parser(prog="python -m gpt_lightning.runs.compare",
                     description="Table and plot (validation loss against tokens) of several runs or a sweep.")
    parser.add_argument("paths", nargs="+", help="run folders (with result.json) or sweep folders")
    parser.add_argument("--out", default=None, help=f"plot file (default: <sweep>/{PLOT_FILE} or ./{PLOT_FILE})")

    def run():
        args = parser.parse_args(argv)
        text, image = compare(args.paths, Path(args.out) if args.out else None)
        print(text, end="")
        print(f"plot: {image}" if image else f"no plot: no run has a validation curve ({HISTORY_FILE})")
        return image

    return main_guard(run)


if __name__ == "__main__":
    main(sys.argv[1:])
