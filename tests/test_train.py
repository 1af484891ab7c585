"""Pretraining end to end: learning, logs, checkpoints, exact resume, schedule, export."""

import json
import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import compose_config, run_job
from gpt_lightning.weights.hf_io import load_pretrained
from gpt_lightning.train import job as pipeline
from gpt_lightning.train.schedule import lr_at

TINY = ["model=gpt2_tiny", "data.max_length=32", "data.batch_size=4", "model.dropout=0.1",
        "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "callbacks.samples.max_new_tokens=6"]


def events(run: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """16 steps of a tiny GPT-2 on The Verdict, validating every 8 batches."""
    out = tmp_path_factory.mktemp("run")
    overrides = TINY + ["trainer.max_steps=16", "trainer.val_check_interval=8", "optim.lr=3e-3", "optim.warmup=4"]
    result = run_job("train", out, overrides)
    return out, result, compose_config("train", overrides)


def test_loss_falls_on_the_verdict(trained_run):
    out, result, _ = trained_run
    acc = events(out)
    train_loss = [v for _, v in scalars(acc, "train/loss")]
    assert len(train_loss) == 16
    assert sum(train_loss[-4:]) / 4 < sum(train_loss[:4]) / 4 - 0.5
    val = [v for _, v in scalars(acc, "val/loss")]
    assert len(val) == 2 and val[1] < val[0]
    assert result["best_val_loss"] == pytest.approx(min(val), rel=1e-5)


def test_tensorboard_holds_every_scalar(trained_run):
    out, result, _ = trained_run
    acc = events(out)
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "val/loss", "val/perplexity", "train/lr", "train/grad_norm",
                "train/tokens_seen", "train/tokens_per_s", "loss_vs_tokens/train", "loss_vs_tokens/val",
                "hp/best_val_loss"):
        assert tag in tags, tag
    (_, loss), (_, ppl) = scalars(acc, "val/loss")[-1], scalars(acc, "val/perplexity")[-1]
    assert ppl == pytest.approx(math.exp(loss), rel=1e-4)
    # tokens seen: 4 windows of 32 tokens per step
    assert scalars(acc, "train/tokens_seen")[-1][1] == 16 * 4 * 32 == result["tokens_seen"]
    # loss against tokens seen uses tokens as its x-axis
    assert scalars(acc, "loss_vs_tokens/val")[-1][0] == 16 * 4 * 32
    assert any("samples" in t for t in acc.Tags()["tensors"])  # generated text at each validation


def test_logged_learning_rate_follows_warmup_cosine(trained_run):
    out, _, cfg = trained_run
    logged = dict(scalars(events(out), "train/lr"))
    for step in (0, 3, 4, 9, 15):
        expected = lr_at(step, peak_lr=3e-3, min_lr=3e-4, warmup_steps=4, total_steps=16)
        assert logged[step] == pytest.approx(expected, rel=1e-5), step


def test_artifacts_exist_and_export_matches_checkpoint(trained_run):
    out, result, _ = trained_run
    assert (out / "checkpoints" / "last.ckpt").is_file()
    best = list((out / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1 and str(best[0]) == result["best_checkpoint"]
    for name in ("config.yaml", "loss.png", "samples.txt", "result.json"):
        assert (out / name).is_file(), name
    assert len((out / "samples.txt").read_text().splitlines()) == 2
    exported = load_pretrained(out / "export").eval()
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    for key, value in exported.state_dict().items():
        assert torch.equal(value, state["model." + key]), key


def test_export_loads_in_transformers(trained_run):
    transformers = pytest.importorskip("transformers")
    out, _, _ = trained_run
    ours = load_pretrained(out / "export").eval()
    hf = transformers.GPT2LMHeadModel.from_pretrained(out / "export").eval()
    idx = torch.randint(0, 50257, (2, 20))
    with torch.no_grad():
        assert (ours(idx) - hf(idx).logits).abs().max() < 1e-4


class _Crash(Exception):
    pass


def test_resume_mid_epoch_ends_with_the_same_weights(tmp_path, monkeypatch):
    """A run killed after step 6 and resumed from last.ckpt equals an uninterrupted run."""
    common = TINY + ["trainer.max_steps=10", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
                     "callbacks.checkpoint.every_n_train_steps=3", "callbacks.samples.enabled=false",
                     "optim.warmup=3", "export=false"]
    full = run_job("train", tmp_path / "full", common)

    import lightning as L

    class CrashAfter(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == 7:  # last.ckpt was written at step 6 (epoch 1, batch 2 of 4)
                raise _Crash

    build = pipeline.build_callbacks
    monkeypatch.setattr(pipeline, "build_callbacks", lambda c, out, spec: build(c, out, spec) + [CrashAfter()])
    with pytest.raises(_Crash):
        run_job("train", tmp_path / "crashed", common)
    monkeypatch.setattr(pipeline, "build_callbacks", build)
    ckpt = tmp_path / "crashed" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 6
    resumed = run_job("train", tmp_path / "resumed", common + [f"ckpt_path={ckpt}"])

    a = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == 10
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert full["tokens_seen"] == resumed["tokens_seen"]
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    from gpt_lightning.train.checkpoint_io import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)

    def broken_save(obj, path, *a, **k):
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    from gpt_lightning.atomic import WriteError

    with pytest.raises(WriteError, match=r"could not write .*last.ckpt: disk full"):
        io.save_checkpoint({"step": 2}, target)
    assert torch.load(target, weights_only=False) == {"step": 1}  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left


def test_bad_max_length_names_the_key(tmp_path):
    with pytest.raises(Exception, match=r"data.max_length=512 .*model.context_length=128"):
        run_job("train", tmp_path, ["model=gpt2_tiny", "data.max_length=512"])


def test_result_json_is_written(trained_run):
    out, result, _ = trained_run
    saved = json.loads((out / "result.json").read_text())
    assert saved["global_step"] == 16 and saved["params"] == result["params"]


def test_fsdp_on_cpu_is_one_clear_line(tmp_path):
    from gpt_lightning import ConfigError

    with pytest.raises(ConfigError, match=r"strategy='fsdp' is invalid: needs GPUs .* use strategy=ddp"):
        run_job("train", tmp_path, ["strategy=fsdp", "trainer.accelerator=cpu", "trainer.devices=2"])


def test_loss_history_plots_every_validation_at_its_token_count(trained_run):
    """Validations at steps 8 and 16 (1,024 and 2,048 tokens) are both plotted, each with its
    own loss (not the previous one); the train curve has one point per optimizer step."""
    out, _, _ = trained_run
    acc = events(out)
    val = [v for _, v in scalars(acc, "val/loss")]
    plotted = scalars(acc, "loss_vs_tokens/val")
    assert [t for t, _ in plotted] == [8 * 4 * 32, 16 * 4 * 32]
    assert [v for _, v in plotted] == pytest.approx(val, rel=1e-6)
    history = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["callbacks"]
    history = history["LossHistory"]  # what loss.png is drawn from
    assert [(t, v) for t, v, _ in history["val"]] == [(1024, pytest.approx(val[0], rel=1e-6)),
                                                       (2048, pytest.approx(val[1], rel=1e-6))]
    train_loss = [v for _, v in scalars(acc, "train/loss")]
    assert [v for _, v, _ in history["train"]] == pytest.approx(train_loss, rel=1e-6)
    assert [t for t, _, _ in history["train"]] == [128 * step for step in range(1, 17)]


def test_last_checkpoint_is_written_after_each_validation(tmp_path, monkeypatch):
    """callbacks.checkpoint.every_n_train_steps=null: last.ckpt holds the state of the latest
    validation while training goes on (not only once training ends)."""
    import lightning as L

    seen = {}

    class Look(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            last = tmp_path / "run" / "checkpoints" / "last.ckpt"
            seen[trainer.global_step] = (torch.load(last, map_location="cpu", weights_only=False)["global_step"]
                                         if last.is_file() else None)

    build = pipeline.build_callbacks
    monkeypatch.setattr(pipeline, "build_callbacks", lambda c, out, spec: build(c, out, spec) + [Look()])
    run_job("train", tmp_path / "run", TINY + ["trainer.max_steps=7", "trainer.val_check_interval=3", "logger=none",
                                               "callbacks.samples.enabled=false", "export=false",
                                               "callbacks.checkpoint.async_write=false",  # on disk at once
                                               "callbacks.checkpoint.every_n_minutes=null"])
    assert seen[2] is None and seen[3] == 3 and seen[5] == 3 and seen[6] == 6
