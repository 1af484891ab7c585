"""Evaluation data files: the public sets through the verified downloader, JSON Lines reading."""

from __future__ import annotations

import json
from pathlib import Path

from gpt_lightning.download import DATASETS, fetch
from gpt_lightning.errors import ConfigError


def dataset_file(name: str, path: str | None, key: str) -> Path:
    """``path`` as given (no hash check), else the public file ``name``: the data dir, the
    cache or a verified download (see ``gpt_lightning.download``)."""
    if path:
        found = Path(str(path)).expanduser()
        if not found.is_file():
            raise ConfigError(f"{key}={str(path)!r} is not a file")
        return found
    return fetch(name, DATASETS[name], key=key)


def read_jsonl(path: Path, key: str, limit: int | None = None) -> list[tuple[int, dict]]:
    """(line number, object) for each non-empty line (the first ``limit`` of them).

    A line that is not a JSON object stops with one line naming the file and line.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ConfigError(f"{key}: {path} is not UTF-8 text (byte {err.start})") from None
    records = []
    for number, line in enumerate(lines, 1):
        if limit is not None and len(records) >= limit:
            break
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{key}: {path} line {number}: invalid JSON at column {err.colno}: {err.msg}") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{key}: {path} line {number}: expected a JSON object")
        records.append((number, record))
    if not records:
        raise ConfigError(f"{key}: {path} holds no records")
    return records


def bad_record(key: str, path: Path, number: int, why: str) -> ConfigError:
    return ConfigError(f"{key}: {path} line {number}: {why}")
