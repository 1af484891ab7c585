"""Trackers: W&B (offline, read back from its run file) and MLflow (local SQLite store, read back
with MlflowClient) in one run, resumed from the command the end-of-run report prints: the same
W&B and MLflow runs continue. Combinations, a missing extra and a missing W&B account."""

import json
import shlex
import sys

import pytest
import torch

from helpers import compose_config, run_job
from gpt_lightning.config.schemas import OptimConfig
from gpt_lightning.cli.hydra_adapter import plain
from gpt_lightning import ConfigError
from gpt_lightning.train.trackers import TRACKER_KEY, build_logger

SMOKE = ["debug=smoke", "trainer.enable_progress_bar=false"]


@pytest.fixture
def tracked_runs(tmp_path, monkeypatch, capsys):
    """A smoke run to W&B + MLflow + CSV, then its resume for 4 more steps (a second epoch)."""
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    out = tmp_path / "run"
    first = run_job("train", out, SMOKE + [
        "logger=[csv,wandb,mlflow]", f"logger.mlflow.tracking_uri={store}"])
    report = capsys.readouterr().out
    resume = [line for line in report.splitlines() if "ckpt_path=" in line][0].split("   #")[0]
    words = shlex.split(resume)
    assert words[:2] == ["python", "train.py"]
    second = run_job("train", out, words[2:] + ["trainer.max_epochs=-1", "trainer.max_steps=8"])
    return out, store, first, second, report


def test_resumed_run_continues_the_same_wandb_and_mlflow_runs(tracked_runs):
    from mlflow.tracking import MlflowClient
    from wandb_records import read_run

    out, store, first, second, report = tracked_runs
    assert first["global_step"] == 4 and second["global_step"] == 8
    stored = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[TRACKER_KEY]
    history = json.loads((out / "history.json").read_text())["val"]  # both sessions
    assert len(history) == 2

    # W&B: two offline sessions of one run id, steps 0-3 then 4-7, the same numbers as the run
    files = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2
    runs = [read_run(f) for f in files]
    assert runs[0]["id"] == runs[1]["id"] == stored["wandb"]
    steps = [[row["trainer/global_step"] for row in r["history"] if "train/loss" in row] for r in runs]
    # Lightning numbers the logged steps 0-3, then (after a resume) from 5: later ones, never a restart at 0
    assert steps[0] == [0, 1, 2, 3] and len(steps[1]) == 4 and steps[1][0] > 3
    val = [row["val/loss"] for r in runs for row in r["history"] if "val/loss" in row]
    assert val == pytest.approx([v for _, v, _ in history], rel=1e-6)
    assert runs[1]["summary"]["hp/best_val_loss"] == pytest.approx(second["best_val_loss"], rel=1e-6)
    tables = [row for row in runs[0]["history"] if row.get("samples/_type") == "table-file"]
    table = json.loads((files[0].parent / "files" / tables[0]["samples/path"]).read_text())
    assert table["columns"] == ["step", "prompt", "completion"] and table["data"][0][:2] == [4, "Every effort moves you"]
    images = [row for row in runs[1]["history"] if "loss/filenames" in row]  # the loss plot
    assert (files[1].parent / "files" / images[0]["loss/filenames"][0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert runs[1]["config"]["optim.lr"] == OptimConfig().lr  # the run's (default) learning rate

    # MLflow: one run in the store holding both sessions
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("gpt_lightning")
    found = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in found] == [stored["mlflow"]]
    run_id = stored["mlflow"]
    assert sorted(m.step for m in client.get_metric_history(run_id, "train/loss")) == steps[0] + steps[1]
    logged_val = [m.value for m in sorted(client.get_metric_history(run_id, "val/loss"), key=lambda m: m.step)]
    assert logged_val == pytest.approx([v for _, v, _ in history], rel=1e-6)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["optim.lr"] == str(OptimConfig().lr)
    assert run.data.metrics["hp/best_val_loss"] == pytest.approx(second["best_val_loss"], rel=1e-6)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"loss.png", "samples"} <= artifacts

    # the report named both trackers, the numbers and the next commands
    assert f"run {stored['wandb']}: wandb sync" in report and f"run {stored['mlflow']}:" in report
    assert f"best {first['best_val_loss']:.4f}" in report and "tokens/s" in report
    assert "python generate.py init=checkpoint init.path=" in report


def test_several_loggers_at_once(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    from gpt_lightning.train.trackers import ResumableCSVLogger  # Lightning's CSVLogger, rows kept on resume

    cfg = plain(compose_config("train", ["logger=[tensorboard,csv]"]))
    loggers = build_logger(cfg["logger"], tmp_path / "run")
    assert [type(lg) for lg in loggers] == [TensorBoardLogger, ResumableCSVLogger]
    assert build_logger(plain(compose_config("train", ["logger=none"]))["logger"], tmp_path) is False


def test_missing_extra_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb fails, as when it is not installed
    cfg = plain(compose_config("train", ["logger=wandb"]))
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[wandb\]"'):
        build_logger(cfg["logger"], tmp_path / "run")


def test_wandb_without_account_or_offline_mode_fails_early(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    cfg = plain(compose_config("train", ["logger=wandb"]))
    with pytest.raises(ConfigError, match="WANDB_MODE=offline"):
        build_logger(cfg["logger"], tmp_path / "run")
