"""RunRecord: what the model card says about a run and the Trainer alone does not keep.

The resolved config, the data (files, the token cache's content hash, token counts), each
session's command line, code version, devices, precision, training time and tokens. It is
saved in every checkpoint (under ``model_card.RECORD_STATE``), so
``python -m gpt_lightning.weights.export <ckpt>`` writes the same card from a checkpoint as the
run writes at its end.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

import lightning as L

from gpt_lightning.weights.model_card import RECORD_STATE


class RunRecord(L.Callback):
    """Collects what the model card says about a run; kept in checkpoints across resumes."""

    @property
    def state_key(self) -> str:
        return RECORD_STATE  # where the card (weights/model_card.py) finds it in a checkpoint

    def __init__(self, config: Mapping, command: str | None = None) -> None:
        self.config = dict(config)
        self.command = command
        self.data: dict = {}
        self.previous: list[dict] = []  # sessions before a resume, from the checkpoint
        self.current: dict = {}
        self._start: tuple[float, int, int] | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        self.data = data_facts(trainer.datamodule) if trainer.datamodule is not None else {}
        self.current = {
            "command": self.command,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "code": code_version(),
            "devices": trainer.world_size,
            "accelerator": type(trainer.accelerator).__name__.removesuffix("Accelerator").lower(),
            "strategy": type(trainer.strategy).__name__,
            "precision": str(trainer.precision),
        }

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self._start = (time.perf_counter(), pl_module.tokens_seen, trainer.global_step)
        self.current.update(start_step=trainer.global_step, start_tokens=pl_module.tokens_seen)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if self._start is None:
            return
        t0, tokens0, _ = self._start
        seconds = time.perf_counter() - t0
        tokens = pl_module.tokens_seen - tokens0
        self.current.update(end_step=trainer.global_step, tokens=tokens, train_time_s=round(seconds, 2),
                            tokens_per_s=round(tokens / seconds, 1) if seconds > 0 else None)

    def sessions(self) -> list[dict]:
        return self.previous + ([self.current] if self.current else [])

    def state_dict(self) -> dict:
        return {"config": self.config, "data": self.data, "sessions": self.sessions()}

    def load_state_dict(self, state: dict) -> None:
        self.previous = list(state.get("sessions", []))


def portable_names(files: list[str]) -> dict[str, str]:
    """Each file's name as the card shows it: relative to the files' common folder (just the
    name for one file), so no card carries this machine's absolute paths."""
    import os

    if not files:
        return {}
    parents = [str(Path(f).parent) for f in files]
    try:
        common = os.path.commonpath(parents)
    except ValueError:  # different drives
        return {f: Path(f).name for f in files}
    return {f: os.path.relpath(f, common) for f in files}


def data_facts(datamodule) -> dict:
    """Files, content hash and sizes of a pretraining or instruction data module (after setup)."""
    from gpt_lightning.data.token_cache import corpus_key

    facts: dict[str, Any] = {"batch_size": getattr(datamodule, "batch_size", None),
                             "max_length": getattr(datamodule, "max_length", None)}
    token_file = getattr(datamodule, "token_file", None)
    if token_file is not None:  # data/pretrain.py
        token_file = Path(token_file)
        meta_file = token_file.with_suffix(".json")
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        train = getattr(datamodule, "train_set", None)
        files = [str(f) for f in meta.get("files", [])]
        names = portable_names(files)
        facts.update(kind="pretraining", name=getattr(datamodule, "name", None),
                     files=[names[f] for f in files],
                     tokens_per_file={names.get(str(f), Path(f).name): n
                                      for f, n in meta.get("tokens_per_file", {}).items()},
                     token_cache=token_file.name, content_hash=token_file.stem,
                     tokens=getattr(datamodule, "num_tokens", meta.get("num_tokens")),
                     train_tokens=(train.end - train.start) if train is not None else None,
                     val_fraction=getattr(datamodule, "val_fraction", None), stride=getattr(datamodule, "stride", None))
    elif getattr(datamodule, "manifest", None):  # data/corpus.py: prepared shards
        source, train, val = datamodule.manifest["source"], datamodule.train_set, datamodule.val_set
        paths = [str(f["path"]) for f in source.get("files", [])]
        names = portable_names(paths)
        files = [names[p] for p in paths] or [f"hub:{source['hub']['name']}"]
        facts.update(kind="pretraining", name="corpus", files=files, token_cache=Path(datamodule.folder).name,
                     tokens=(train.end - train.start) + (val.end - val.start), train_tokens=train.end - train.start,
                     val_fraction=datamodule.val_fraction, stride=datamodule.stride)
    elif hasattr(datamodule, "train_records"):  # data/instruct.py
        from gpt_lightning.data.instruct import DATASET_NAME
        from gpt_lightning.download import fetch_dataset

        path = fetch_dataset(DATASET_NAME, datamodule.path)
        examples = getattr(datamodule, "_examples", {})
        facts.update(kind="instruction", files=[Path(path).name], content_hash=corpus_key([path]),
                     records={s: len(getattr(datamodule, f"{s}_records")) for s in ("train", "val", "test")},
                     tokens={s: sum(e.num_tokens for e in ex) for s, ex in examples.items()},
                     mask_prompt=getattr(datamodule, "mask_prompt", None))
    return facts


def code_version() -> dict:
    """This package's version and, in a git checkout, its commit (and whether it had local changes)."""
    from gpt_lightning import __version__

    root = Path(__file__).resolve().parents[2]  # the package folder
    version = {"package": __version__, "commit": None, "dirty": None}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode == 0:
            version["commit"] = commit.stdout.strip()
            status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10)
            version["dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return version
