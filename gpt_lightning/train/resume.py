"""``ckpt_path``: which checkpoint a run resumes from, checked before the Trainer starts.

``ckpt_path=auto`` takes the newest valid ``checkpoints/last*.ckpt`` of the run folder and
starts fresh when there is none, so a requeued job restarts with the same command (give
it a fixed ``hydra.run.dir``). Any checkpoint given is read (memory-mapped) and must be one
of this project, of the same model (architecture and parameter names/shapes, LoRA
included), and, when it stopped in the middle of an epoch, of the same data.batch_size
and number of ranks: the samplers skip ``batches x batch size`` items per rank, so
another batch size or rank count would skip the wrong samples.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gpt_lightning.errors import ConfigError, bad_value
from gpt_lightning.weights.sources import _architecture_mismatch, read_checkpoint

log = logging.getLogger("gpt_lightning")

KEY = "ckpt_path"
AUTO = "auto"


def resolve(ckpt_path, out: Path, module, datamodule, world_size: int) -> str | None:
    """The checkpoint ``trainer.fit`` should resume from (None: a fresh start), checked."""
    if ckpt_path is None or str(ckpt_path) == "":
        return None
    if str(ckpt_path) == AUTO:
        return _newest_valid(Path(out) / "checkpoints", module, datamodule, world_size)
    path = Path(str(ckpt_path)).expanduser()
    if path.is_dir() and (path / "checkpoints" / "last.ckpt").is_file():
        raise bad_value(KEY, str(path), f"a run folder, not a checkpoint file; use "
                        f"ckpt_path={path / 'checkpoints' / 'last.ckpt'}")
    check(path, module, datamodule, world_size)
    return str(path)


def candidate(ckpt_path, out: Path) -> str | None:
    """The checkpoint ``ckpt_path`` points at before any check (``auto``: the newest last.ckpt
    of the run folder, or None), for what must be known before the Trainer exists (the
    trackers' run ids); :func:`resolve` checks it afterwards."""
    if ckpt_path is None or str(ckpt_path) == "":
        return None
    if str(ckpt_path) == AUTO:
        found = _candidates(Path(out) / "checkpoints")
        return str(found[0]) if found else None
    return str(ckpt_path)


def _candidates(folder: Path) -> list[Path]:
    return sorted(folder.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime_ns, reverse=True)


def _newest_valid(folder: Path, module, datamodule, world_size: int) -> str | None:
    candidates = _candidates(folder)
    if not candidates:
        log.info("ckpt_path=auto: no checkpoint in %s, starting fresh", folder)
        return None
    problems = []
    for path in candidates:
        try:
            check(path, module, datamodule, world_size)
        except ConfigError as err:
            problems.append(str(err))
            log.warning("ckpt_path=auto: skipping %s (%s)", path, err)
            continue
        log.info("ckpt_path=auto: resuming from %s", path)
        return str(path)
    raise ConfigError(f"ckpt_path=auto found no usable checkpoint in {folder}: {problems[0]}; remove the "
                      f"folder's checkpoints to start fresh, or choose another hydra.run.dir")


def check(path: Path, module, datamodule, world_size: int) -> None:
    """One line (naming ckpt_path) unless ``path`` resumes this run's model and data exactly."""
    ckpt, config = read_checkpoint(path, KEY)
    mismatch = _architecture_mismatch(config, module.model.config)
    if mismatch:
        raise bad_value(KEY, str(path), f"a checkpoint of another model ({mismatch}); resume with the "
                        f"model settings it was trained with, or start from its weights with "
                        f"init=checkpoint init.path={path}")
    if "loops" not in ckpt or "optimizer_states" not in ckpt:
        raise bad_value(KEY, str(path), f"holds weights but no training state to resume; start from them "
                        f"with init=checkpoint init.path={path}")
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()}
    if found != expected:
        missing = sorted(set(expected) - set(found))[:4]
        unexpected = sorted(set(found) - set(expected))[:4]
        shapes = [k for k in expected if k in found and expected[k] != found[k]][:4]
        raise bad_value(KEY, str(path), f"its weights do not fit this run's model (missing {missing}, "
                        f"unexpected {unexpected}, other shapes {shapes}); resume with the same model and "
                        f"finetune.lora settings")
    _check_data_position(path, ckpt.get(type(datamodule).__qualname__), datamodule, world_size)


def _check_data_position(path: Path, state: dict | None, datamodule, world_size: int) -> None:
    """A mid-epoch checkpoint resumes at the right sample only with its batch size and ranks."""
    if not state or "batch_size" not in state:  # older checkpoints did not record them
        return
    batches, per_epoch = int(state.get("batches", 0)), state.get("epoch_batches")
    if not batches or (per_epoch is not None and batches >= int(per_epoch)):
        return  # at an epoch boundary: the next epoch starts from its first sample anyway
    where = f"{path} stopped in the middle of an epoch (after {batches} of {per_epoch or '?'} batches)"
    saved_bs, bs = int(state["batch_size"]), getattr(datamodule, "batch_size", None)
    if bs is not None and bs != saved_bs:
        raise bad_value("data.batch_size", bs, f"{where} with data.batch_size={saved_bs}; another batch size "
                        f"would skip the wrong samples: use data.batch_size={saved_bs}")
    saved_ws = int(state.get("world_size", world_size))
    if saved_ws != world_size:
        raise bad_value("trainer.devices", world_size, f"{where} on {saved_ws} ranks; another number of ranks "
                        f"would skip the wrong samples: resume on {saved_ws} ranks "
                        f"(trainer.devices x trainer.num_nodes)")
