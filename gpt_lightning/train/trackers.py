"""The ``logger`` config group: which experiment trackers a run writes to, and what each gets.

``logger=tensorboard`` (default), ``csv``, ``wandb``, ``mlflow``, ``none``, or several at once:
``logger=[tensorboard,wandb]``. Each option is one entry of ``cfg.logger`` (``{name: {_target_,
...}}``), so a selection of several merges into one mapping.

W&B and MLflow are optional extras (``pip install -e ".[wandb]"`` / ``".[mlflow]"``); a missing
one stops the run with one line naming the extra. Their run ids are stored in every checkpoint
(:class:`TrackerRuns`), so ``ckpt_path=...`` continues the same W&B / MLflow run.

Samples, the loss plot, tables and hyperparameters go to each tracker as it supports them
(:func:`log_text`, :func:`log_image`, :func:`log_rows`, :func:`log_hparams`).
"""

from __future__ import annotations

import csv
import importlib
import json
import logging
import netrc
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers import MLFlowLogger as _MLFlowLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from gpt_lightning.errors import bad_value
from gpt_lightning.runs.report import short_path

log = logging.getLogger("gpt_lightning")

TRACKER_KEY = "tracker_runs"  # checkpoint entry: {"wandb": run id, "mlflow": run id}
LOGGERS = ("tensorboard", "csv", "wandb", "mlflow", "none")
# what each optional tracker needs imported, and the extra that installs it
EXTRAS = {"wandb": ("wandb",), "mlflow": ("mlflow", "sqlalchemy", "alembic")}


# ---- construction -------------------------------------------------------------------------
def build_logger(logger_cfg: Mapping | None, out: Path, ckpt_path: str | None = None) -> list[Logger] | bool:
    """The Lightning loggers of ``cfg.logger`` writing under the run folder ``out``.

    ``ckpt_path`` (a resumed run) supplies the W&B / MLflow run ids to continue. Returns
    ``False`` (no logger) for ``logger=none``.
    """
    from gpt_lightning.config.schemas import build

    entries = {k: dict(v) for k, v in dict(logger_cfg or {}).items() if v is not None}
    if "_target_" in entries or any(not isinstance(v, dict) for v in entries.values()):
        raise bad_value("logger", dict(logger_cfg), "entries of the form {name: {_target_: ..., ...}}; "
                        f"pick options with logger=<one of {list(LOGGERS)}> or logger=[tensorboard,csv]")
    resumed = read_tracker_runs(ckpt_path) if ckpt_path else {}
    loggers = []
    for name, entry in entries.items():
        if not entry.get("_target_"):
            continue
        kind = tracker_kind(entry["_target_"])
        if kind in EXTRAS:
            _require(kind)
        if kind == "wandb":
            entry = _wandb_settings(entry, out, resumed.get("wandb"))
        elif kind == "mlflow":
            entry = _mlflow_settings(entry, resumed.get("mlflow"))
        else:
            entry["save_dir"] = str(out)
        loggers.append(build(entry, f"logger.{name}"))
    return loggers or False


def tracker_kind(target: str) -> str:
    """``wandb``, ``mlflow``, ``tensorboard``, ``csv`` or ``other`` for a ``_target_``."""
    name = target.rsplit(".", 1)[-1].lower()
    for kind, marker in (("wandb", "wandb"), ("mlflow", "mlflow"), ("tensorboard", "tensorboard"), ("csv", "csv")):
        if marker in name:
            return kind
    return "other"


def _require(kind: str) -> None:
    for module in EXTRAS[kind]:
        try:
            importlib.import_module(module)
        except ImportError:
            raise bad_value("logger", kind, f"the {module} package is not installed; "
                            f'pip install -e ".[{kind}]" (or pick logger=tensorboard or logger=csv)') from None


def _wandb_settings(entry: dict, out: Path, resumed_id: str | None) -> dict:
    entry["save_dir"] = str(out)  # W&B writes <run>/wandb/
    entry["id"] = entry.get("id") or resumed_id
    offline = bool(entry.get("offline")) or os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun", "disabled")
    if not offline and not _wandb_credentials():
        raise bad_value("logger", "wandb", "no W&B account is set up (no WANDB_API_KEY, no `wandb login`); "
                        "log in, or log offline with WANDB_MODE=offline or logger.wandb.offline=true")
    return entry


def _wandb_credentials() -> bool:
    """True when an API key is at hand (environment or the netrc file ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0].split(":")[0]
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


MLFLOW_SCHEMES = ("file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


def _check_mlflow_uri(uri: str) -> None:
    """A store MLflow knows, and for a server one that answers now: a wrong URI otherwise costs
    minutes of MLflow's retries and a long traceback after the model was built."""
    import socket
    from urllib.parse import urlsplit

    key = "logger.mlflow.tracking_uri"
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0].lower()
    if "://" not in uri and not uri.startswith("file:"):
        return  # a local folder (MLflow's file store)
    if scheme not in MLFLOW_SCHEMES:
        raise bad_value(key, uri, f"a URI starting with one of {', '.join(s + ':' for s in MLFLOW_SCHEMES)} "
                        "e.g. sqlite:///outputs/mlflow.db or http://127.0.0.1:5000")
    if scheme in ("http", "https"):
        port = parts.port or (443 if scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname or "", port), timeout=3).close()
        except OSError as err:
            raise bad_value(key, uri, f"no MLflow server answers at {parts.hostname}:{port} "
                            f"({err.strerror or err}); start one (mlflow server --host 127.0.0.1 --port 5000) "
                            "or log to a local store: logger.mlflow.tracking_uri=sqlite:///outputs/mlflow.db") from None


def _mlflow_settings(entry: dict, resumed_id: str | None) -> dict:
    uri = str(entry.get("tracking_uri") or "")
    if not uri:
        raise bad_value("logger.mlflow.tracking_uri", entry.get("tracking_uri"),
                        "a store such as sqlite:///outputs/mlflow.db or a server such as http://127.0.0.1:5000")
    _check_mlflow_uri(uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///")).expanduser()
        db.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{db.resolve()}"  # the same store whichever folder a rank starts in
        if not entry.get("artifact_location"):
            entry["artifact_location"] = (db.resolve().parent / "mlartifacts").as_uri()
    entry["tracking_uri"] = uri
    entry["run_id"] = entry.get("run_id") or resumed_id
    return entry


class MLFlowLogger(_MLFlowLogger):
    """Lightning's MLFlowLogger, able to continue a finished run.

    A resumed run is set back to RUNNING, and a parameter that was already logged keeps its
    first value (MLflow refuses to change one; a resume with e.g. a new ``trainer.max_epochs``
    would fail): the changed keys are listed in a warning and logged as tags ``resumed.<key>``.
    """

    def __init__(self, *args, run_id: str | None = None, **kwargs) -> None:
        super().__init__(*args, run_id=run_id, **kwargs)
        self._given_run_id = run_id

    @property
    def experiment(self):
        first = not self._initialized
        client = super().experiment
        if first and self._given_run_id is not None and rank_zero_only.rank == 0:
            client.update_run(self._given_run_id, status="RUNNING")
        return client

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        from lightning.fabric.utilities.logger import _convert_params, _flatten_dict

        params = _flatten_dict(_convert_params(params))
        logged = self.experiment.get_run(self.run_id).data.params
        changed = {k: v for k, v in params.items() if k in logged and logged[k] != str(v)[:250]}
        if changed:
            log.warning("MLflow run %s keeps its first value of %s (a parameter cannot change); the new values "
                        "are tags resumed.<key>", self.run_id, ", ".join(sorted(changed)))
            for key, value in changed.items():
                self.experiment.set_tag(self.run_id, f"resumed.{key}", str(value)[:250])
        super().log_hyperparams({k: v for k, v in params.items() if k not in changed})


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, whose ``metrics.csv`` survives a resume (``logger=csv``).

    Lightning's writer deletes an existing ``metrics.csv`` when it starts, so a resumed run
    kept only the rows from its checkpoint's step on. Here the earlier rows are read first and
    kept, up to the first step the resumed run logs (rows logged after the checkpoint by the
    interrupted run are logged again by the resumed one, so they are dropped, not doubled).
    """

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment


class _KeepingWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        path = Path(log_dir) / self.NAME_METRICS_FILE
        self._kept: list[dict] | None = None
        if path.is_file():
            with open(path, newline="") as fh:
                self._kept = [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]
        super().__init__(log_dir)  # removes the old file

    def save(self) -> None:
        if self._kept is not None and self.metrics:
            first = min(int(m["step"]) for m in self.metrics if "step" in m)
            earlier = [row for row in self._kept if "step" in row and int(float(row["step"])) < first]
            self._kept = None
            self.metrics = earlier + self.metrics
        super().save()


# ---- resume ---------------------------------------------------------------------------------
class TrackerRuns(L.Callback):
    """Stores the W&B and MLflow run ids in every checkpoint, so a resume continues those runs."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        runs = {}
        for logger in trainer.loggers:
            kind = _kind_of(logger)
            if kind in EXTRAS and logger.version:
                runs[kind] = str(logger.version)
        checkpoint[TRACKER_KEY] = runs


def read_tracker_runs(ckpt_path: str | Path) -> dict[str, str]:
    """The tracker run ids stored in a checkpoint ({} for checkpoints without any, and for a
    path that is no checkpoint: ``resume.resolve`` reports that, before training starts)."""
    from gpt_lightning.config.legacy import load_checkpoint

    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file() or not zipfile.is_zipfile(path):
        return {}
    try:
        ckpt = load_checkpoint(path)
    except Exception:  # a broken checkpoint: resume.resolve names the problem
        return {}
    runs = ckpt.get(TRACKER_KEY) if isinstance(ckpt, dict) else None
    return dict(runs or {})


# ---- what goes to the trackers ----------------------------------------------------------------
def _kind_of(logger: Logger) -> str:
    if isinstance(logger, WandbLogger):
        return "wandb"
    if isinstance(logger, _MLFlowLogger):
        return "mlflow"
    if isinstance(logger, TensorBoardLogger):
        return "tensorboard"
    if isinstance(logger, CSVLogger):
        return "csv"
    return "other"


def _each(trainer: L.Trainer, *kinds: str):
    for logger in trainer.loggers:
        kind = _kind_of(logger)
        if kind in kinds:
            yield kind, logger


@rank_zero_only
def log_text(trainer: L.Trainer, tag: str, prompt: str, text: str, step: int) -> None:
    """A generated sample: TensorBoard TEXT (prompt in bold), a W&B table row, an MLflow text artifact."""
    for kind, logger in _each(trainer, "tensorboard", "wandb", "mlflow"):
        if kind == "tensorboard":
            logger.experiment.add_text(tag, f"**{prompt}**{text}", step)
        elif kind == "wandb":
            logger.log_text(key=tag, columns=["step", "prompt", "completion"], data=[[step, prompt, text]], step=step)
        else:
            logger.experiment.log_text(logger.run_id, prompt + text, f"{tag}/step_{step:07d}.txt")


@rank_zero_only
def log_image(trainer: L.Trainer, tag: str, path: Path, step: int) -> None:
    """A PNG file: TensorBoard IMAGES, a W&B image, an MLflow artifact."""
    for kind, logger in _each(trainer, "tensorboard", "wandb", "mlflow"):
        if kind == "tensorboard":
            import matplotlib.image

            pixels = matplotlib.image.imread(str(path))[..., :3]  # RGBA floats in [0, 1] -> RGB
            logger.experiment.add_image(tag, pixels, step, dataformats="HWC")
        elif kind == "wandb":
            logger.log_image(key=tag, images=[str(path)], step=step)
        else:
            logger.experiment.log_artifact(logger.run_id, str(path))


@rank_zero_only
def log_rows(trainer: L.Trainer, tag: str, rows: list[dict], step: int) -> None:
    """Rows of a table (e.g. responses): TensorBoard markdown, a W&B table, an MLflow JSON artifact."""
    if not rows:
        return
    keys = list(rows[0])
    for kind, logger in _each(trainer, "tensorboard", "wandb", "mlflow"):
        if kind == "tensorboard":
            cell = lambda v: str(v).replace("|", "\\|").replace("\n", "<br>")  # noqa: E731
            table = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            table += ["| " + " | ".join(cell(r.get(k, "")) for k in keys) + " |" for r in rows]
            logger.experiment.add_text(tag, "\n".join(table), step)
        elif kind == "wandb":
            logger.log_table(key=tag, columns=keys, data=[[r.get(k) for k in keys] for r in rows], step=step)
        else:
            logger.experiment.log_text(logger.run_id, json.dumps(rows, indent=1, ensure_ascii=False), f"{tag}.json")


def flatten(config: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"optim.lr": 1e-3, ...}``: every leaf of a nested config, lists as strings."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif key != "_target_":
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


@rank_zero_only
def log_hparams(trainer: L.Trainer, config: Mapping, metrics: dict[str, float]) -> None:
    """Every config value with the run's final numbers: TensorBoard's HParams tab, the W&B
    config and summary, MLflow parameters and metrics, the CSV logger's hparams.yaml."""
    flat = flatten(config)
    for kind, logger in _each(trainer, "tensorboard", "wandb", "mlflow", "csv"):
        if kind == "tensorboard":
            if metrics:
                logger.log_hyperparams(flat, metrics=metrics)
        elif kind == "wandb":
            logger.experiment.config.update(flat, allow_val_change=True)
            logger.experiment.summary.update(metrics)
        else:
            logger.log_hyperparams(flat)
            if metrics:
                logger.log_metrics(metrics, step=trainer.global_step)
        logger.save()


@rank_zero_only
def finish(trainer: L.Trainer) -> None:
    """Close every tracker run (W&B keeps its run open until told; MLflow is marked FINISHED)."""
    for kind, logger in _each(trainer, "tensorboard", "wandb", "mlflow", "csv"):
        if kind == "wandb":
            logger.experiment.finish()
        else:
            logger.finalize("success")


def describe(trainer: L.Trainer) -> list[tuple[str, str]]:
    """(tracker, where to look) for the end-of-run report."""
    found = []
    for kind, logger in _each(trainer, "tensorboard", "wandb", "mlflow", "csv"):
        if kind == "tensorboard":
            found.append(("tensorboard", f"tensorboard --logdir {short_path(logger.log_dir)}"))
        elif kind == "csv":
            found.append(("csv", short_path(Path(logger.log_dir) / "metrics.csv")))
        elif kind == "wandb":
            run = logger.experiment
            offline = str(getattr(run.settings, "mode", "")) in ("offline", "dryrun")
            where = f"wandb sync {short_path(run.dir).removesuffix('/files')}" if offline else getattr(run, "url", "")
            found.append(("wandb", f"run {run.id}: {where}"))
        else:
            found.append(("mlflow", f"run {logger.run_id}: mlflow ui --backend-store-uri {logger._tracking_uri}"))
    return found


__all__ = ["build_logger", "TrackerRuns", "read_tracker_runs", "MLFlowLogger", "log_text", "log_image", "log_rows",
           "log_hparams", "finish", "describe", "flatten", "tracker_kind"]


def log_text_table(trainer: L.Trainer, tag: str, jsonl: Path, limit: int = 10) -> None:
    """The first ``limit`` rows of a JSON Lines file as a table in the trackers (TensorBoard's
    TEXT tab as markdown, a W&B table, an MLflow JSON artifact)."""
    import json

    if not jsonl.is_file():
        return
    rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()[:limit]]
    log_rows(trainer, tag, rows, trainer.global_step)
