"""Fault catalogue: kill -9, pre-emption signals, locked / read-only / full folders, bad ckpt_path.

Every case is a row of a table and asserts the behaviour the README's "When something goes
wrong" section promises. The kill and signal tests run train.py in real subprocesses
(tests/fault_runner.py injects the fault) and compare the resumed run's final weights with
an uninterrupted run bit for bit: both run the same computation on the same CPU.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import ROOT, run_job
from gpt_lightning.weights.hf_io import save_pretrained
from gpt_lightning import ConfigError
from gpt_lightning import atomic
from gpt_lightning.train import run_folder
from gpt_lightning.atomic import WriteError, atomic_write, remove_stale_tmp
from gpt_lightning.train.checkpoint_io import AtomicCheckpointIO

# ---- subprocess runs: 10 steps of a tiny GPT-2, epochs of 4 batches, last.ckpt every 3 steps ----
# Checkpoints are written synchronously here: the kill moments below are defined by finished
# writes (tests/test_clusters.py resumes runs whose checkpoints were written in the background).
RUN = ["model=gpt2_tiny", "data.max_length=32", "data.batch_size=4", "model.dropout=0.1",
       "trainer.enable_progress_bar=false", "trainer.max_steps=10", "trainer.limit_train_batches=4",
       "trainer.limit_val_batches=2", "callbacks.checkpoint.every_n_train_steps=3", "callbacks.samples.enabled=false",
       "optim.warmup=3", "logger=none", "ckpt_path=auto", "callbacks.checkpoint.async_write=false"]


def run_train(run: Path, fault: str = "none", wait: bool = True, extra: list[str] = (), env: dict | None = None):
    """train.py (through the fault runner) into ``run`` with its own token cache."""
    env = {**os.environ, "FAULT": fault, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    args = [sys.executable, str(ROOT / "tests" / "fault_runner.py"), *RUN, f"hydra.run.dir={run}",
            f"data.cache={run.parent / 'tokens'}", *extra]
    if not wait:
        return subprocess.Popen(args, cwd=run.parent, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    return subprocess.run(args, cwd=run.parent, env=env, text=True, capture_output=True, timeout=300)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 10
    return {**{f"export.{k}": v for k, v in load_file(run / "export" / "model.safetensors").items()},
            **{f"ckpt.{k}": v for k, v in ckpt["state_dict"].items()}}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def tmp_files(*folders: Path) -> list[Path]:
    return [p for f in folders if f.is_dir() for p in f.rglob(".*.tmp")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every interrupted one must equal; it runs beside the first test."""
    run = tmp_path_factory.mktemp("reference") / "run"
    proc = run_train(run, wait=False)
    done: dict = {}

    def weights() -> dict[str, torch.Tensor]:
        if not done:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
            done.update(final_weights(run))
        return done

    yield weights
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def last_step(run: Path) -> int | None:
    path = run / "checkpoints" / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"] if path.is_file() else None


# One folder killed (SIGKILL) four times at different moments, each time restarted with the
# same command: (FAULT spec, the temporary file the dead writer leaves, last.ckpt's step after it)
KILL_CHAIN = [
    ("kill:*.bin:1:write", r"tokens/\..*\.bin\..*\.tmp", None),  # half-way through writing the token cache
    ("kill:last.ckpt:2:rename", r"run/checkpoints/\.last\.ckpt\..*\.tmp", 3),  # step-6 checkpoint complete, not renamed
    ("kill-step:7", None, 6),  # mid-epoch, one step after the step-6 checkpoint
    ("kill:model.safetensors:1:write", r"run/export/\.model\.safetensors\..*\.tmp", 10),  # half-way through the export
]


def test_kill_9_at_four_moments_then_the_same_command_resumes_bit_exactly(reference, tmp_path):
    run = tmp_path / "run"
    for fault, leftover, step in KILL_CHAIN:
        killed = run_train(run, fault)
        assert killed.returncode == -signal.SIGKILL, (fault, killed.stderr[-3000:])
        left = [str(p.relative_to(tmp_path)) for p in tmp_files(run, tmp_path / "tokens")]
        if leftover is None:  # and the previous run's leftovers were removed
            assert left == [], fault
        else:
            assert len(left) == 1 and re.fullmatch(leftover, left[0]), (fault, left)
        assert last_step(run) == step, fault
        assert (run / run_folder.LOCK_NAME).is_file()  # the dead run's lock file stays: it must not block
    resumed = run_train(run)  # the same command: ckpt_path=auto, same hydra.run.dir
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert tmp_files(run, tmp_path / "tokens") == []
    assert_same_weights(final_weights(run), reference())


def test_preemption_signals_write_last_ckpt_then_resume_is_bit_exact(reference, tmp_path):
    """SIGTERM during step 5, then SIGUSR1 (SLURM's --signal) during step 7, both sent by this
    process to the running train.py; each leaves last.ckpt at that step; the third run ends it.
    The SIGUSR1 run looks like SLURM job 4242 and requeues itself (a stand-in scontrol records it)."""
    run = tmp_path / "run"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for sig, pause_at in ((signal.SIGTERM, 4), (signal.SIGUSR1, 6)):
        marker = tmp_path / f"at-step-{pause_at}"
        proc = run_train(run, f"wait-step:{pause_at}:{marker}", wait=False, env=slurm)
        deadline = time.monotonic() + 240
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate()[1][-3000:]
        proc.send_signal(sig)  # a real signal from another process, while step pause_at + 1 runs
        _, err = proc.communicate(timeout=120)
        name = signal.Signals(sig).name
        assert proc.returncode == 128 + sig, err[-3000:]
        assert f"preempted: stopped by {name} after step {pause_at + 1}: " in err and "Traceback" not in err
        assert last_step(run) == pause_at + 1  # written for the signal: the schedule writes at 3, 6, 9
        assert not (run / "result.json").exists() and not (run / "export" / "model.safetensors").exists()
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"  # SIGUSR1 only, not SIGTERM
    resumed = run_train(run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "ckpt_path=auto: resuming from" in resumed.stdout + resumed.stderr
    assert_same_weights(final_weights(run), reference())


# ---- the run-folder lock -------------------------------------------------------------------
def test_second_live_run_into_the_same_folder_is_refused(tmp_path):
    """This process holds the folder's lock (as a running train.py would); a real train.py refuses."""
    run = tmp_path / "run"
    run_folder.lock(run)
    try:
        second = run_train(run)
    finally:
        run_folder.unlock(run)
    assert second.returncode == 2, second.stderr[-3000:]
    assert second.stderr.strip().splitlines()[-1] == (
        f"error: hydra.run.dir='{run}' is invalid: another live run (pid {os.getpid()} on {socket.gethostname()}, "
        f"since {(run / run_folder.LOCK_NAME).read_text().split('since ')[1].strip()}) is writing into it; "
        "wait for it to end or choose another hydra.run.dir")
    assert "Traceback" not in second.stderr and not (run / "checkpoints" / "last.ckpt").exists()


def test_lock_is_exclusive_and_dies_with_its_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
                               "from gpt_lightning.train import run_folder; run_folder.lock(sys.argv[2]); "
                               "print('locked', flush=True); time.sleep(60)", str(ROOT), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert run_folder.is_locked(tmp_path)
        with pytest.raises(ConfigError, match=rf"hydra.run.dir='{re.escape(str(tmp_path))}' is invalid: another live run "
                                              rf"\(pid {holder.pid} on .*\) is writing into it"):
            run_folder.lock(tmp_path)
    finally:
        holder.kill()  # SIGKILL: no clean-up runs in the holder
        holder.wait()
    assert not run_folder.is_locked(tmp_path)  # the kernel dropped the dead process's lock
    run_folder.lock(tmp_path)
    try:
        assert run_folder.is_locked(tmp_path)
    finally:
        run_folder.unlock(tmp_path)


# ---- ckpt_path problems: one line before the Trainer starts --------------------------------------
TINY = ["model=gpt2_tiny", "data.max_length=32", "data.batch_size=4", "trainer.enable_progress_bar=false",
        "callbacks.samples.enabled=false", "logger=none", "export=false", "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=1"]


@pytest.fixture(scope="module")
def mid_epoch_ckpt(tmp_path_factory):
    """A real last.ckpt written after step 2 of an epoch of 4 batches."""
    out = tmp_path_factory.mktemp("ckpt_source")
    run_job("train", out, TINY + ["trainer.max_steps=2"])
    return out / "checkpoints" / "last.ckpt"


def _bad_checkpoints(tmp_path: Path, good: Path) -> dict[str, tuple[str, list[str], str]]:
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(os.urandom(4096))
    folder = tmp_path / "a_folder"
    folder.mkdir()
    run = good.parent.parent
    other_ranks = tmp_path / "two_ranks.ckpt"
    ckpt = torch.load(good, map_location="cpu", weights_only=False)
    ckpt["PretrainDataModule"]["world_size"] = 2
    torch.save(ckpt, other_ranks)
    weights_only = tmp_path / "weights_only.ckpt"
    torch.save({k: v for k, v in ckpt.items() if k not in ("loops", "optimizer_states")}, weights_only)
    # case: (ckpt_path, extra overrides, message)
    return {
        "missing file": (str(tmp_path / "nope.ckpt"), [], r"ckpt_path='.*nope.ckpt' is invalid: no such file"),
        "truncated": (str(truncated), [], r"is invalid: not a Lightning checkpoint \(not a torch.save zip archive"),
        "random bytes": (str(noise), [], r"is invalid: not a Lightning checkpoint"),
        "a folder": (str(folder), [], r"is invalid: a folder, not a checkpoint file"),
        "a run folder": (str(run), [], r"is invalid: a run folder, not a checkpoint file; use ckpt_path=.*last.ckpt"),
        "another model size": (str(good), ["model.n_embd=32"],
                               r"is invalid: a checkpoint of another model \(n_embd=64 \(not 32\)\)"),
        "weights without training state": (str(weights_only), [], r"holds weights but no training state"),
        "mid-epoch, other batch size": (str(good), ["data.batch_size=2"],
                                        r"data.batch_size=2 is invalid: .* stopped in the middle of an epoch "
                                        r"\(after 2 of 4 batches\) with data.batch_size=4; .* use data.batch_size=4"),
        "mid-epoch, other number of ranks": (str(other_ranks), [], r"trainer.devices=1 is invalid: .* on 2 ranks"),
    }


CKPT_CASES = ["missing file", "truncated", "random bytes", "a folder", "a run folder", "another model size",
              "weights without training state", "mid-epoch, other batch size", "mid-epoch, other number of ranks"]


@pytest.mark.parametrize("case", CKPT_CASES)
def test_bad_ckpt_path_is_one_line_before_training(mid_epoch_ckpt, tmp_path, case):
    path, extra, message = _bad_checkpoints(tmp_path, mid_epoch_ckpt)[case]
    out = tmp_path / "run"
    job = ("train", out, TINY + ["trainer.max_steps=4", f"ckpt_path={path}", *extra])
    with pytest.raises(ConfigError, match=message) as err:
        run_job(*job)
    assert "\n" not in str(err.value)
    assert not (out / "checkpoints" / "last.ckpt").exists() and not (out / "config.yaml").exists()


def test_ckpt_path_auto_refuses_a_folder_whose_checkpoints_are_all_unusable(mid_epoch_ckpt, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    job = ("train", out, TINY + ["trainer.max_steps=4", "ckpt_path=auto"])
    with pytest.raises(ConfigError, match=r"ckpt_path=auto found no usable checkpoint in .*checkpoints: "
                                          r"ckpt_path=.*last.ckpt' is invalid: not a Lightning checkpoint"):
        run_job(*job)


def test_ckpt_path_auto_takes_the_newest_valid_checkpoint(mid_epoch_ckpt, tmp_path, caplog):
    import shutil

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(mid_epoch_ckpt, out / "checkpoints" / "last-v1.ckpt")  # valid, an hour older
    an_hour_ago = time.time() - 3600
    os.utime(out / "checkpoints" / "last-v1.ckpt", (an_hour_ago, an_hour_ago))
    (out / "checkpoints" / "last.ckpt").write_bytes(b"garbage")  # newest, unusable
    job = ("train", out, TINY + ["trainer.max_steps=3", "ckpt_path=auto"])
    with caplog.at_level(logging.INFO, logger="gpt_lightning"):
        assert run_job(*job)["global_step"] == 3  # resumed at step 2, one more step
    assert f"ckpt_path=auto: resuming from {out / 'checkpoints' / 'last-v1.ckpt'}" in caplog.text


def test_resume_with_the_same_batch_size_is_accepted(mid_epoch_ckpt, tmp_path):
    job = ("train", tmp_path / "run", TINY + ["trainer.max_steps=3", f"ckpt_path={mid_epoch_ckpt}"])
    assert run_job(*job)["global_step"] == 3


# ---- writability: every output location is checked before training ------------------------------
@pytest.mark.parametrize("where", ["run folder", "checkpoints/", "export/"])
def test_read_only_output_folder_is_one_line_before_training(tmp_path, read_only, where):
    out = tmp_path / "run"
    target = {"run folder": out, "checkpoints/": out / "checkpoints", "export/": out / "export"}[where]
    target.mkdir(parents=True)
    job = ("train", out, TINY + ["trainer.max_steps=2", "export=true"])
    read_only(target)
    with pytest.raises(ConfigError, match=rf"hydra.run.dir='{re.escape(str(out))}' is invalid: .*{re.escape(str(target))} is not writable") as err:
        run_job(*job)
    assert "\n" not in str(err.value)
    assert not (out / "checkpoints" / "last.ckpt").exists()


def test_read_only_token_cache_is_one_line(tmp_path, read_only, tokenizer):
    cache = tmp_path / "tokens"
    cache.mkdir()
    read_only(cache)
    job = ("train", tmp_path / "run", TINY + ["trainer.max_steps=2", f"data.cache={cache}"])
    with pytest.raises(WriteError, match=rf"cannot write {re.escape(str(cache))}/.*\.bin: {re.escape(str(cache))} is not writable .*; "
                                         r"point data.cache \(or GPT_LIGHTNING_CACHE\) at a writable folder"):
        run_job(*job)


# ---- a full disk while a checkpoint is written -----------------------------------------------
def _torch_failure(*args, **kwargs):
    raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4416 vs 4314")


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("failure", [_torch_failure, _enospc], ids=["torch zip writer", "ENOSPC"])
def test_disk_full_during_checkpoint_names_file_and_free_space(tmp_path, monkeypatch, failure):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, target)
    monkeypatch.setattr(torch, "save", failure)
    with pytest.raises(WriteError, match=rf"could not write {re.escape(str(target))}: .* \([\d,.]+ MiB free on {re.escape(str(tmp_path))}\)"):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, target)
    assert torch.load(target, weights_only=False) == {"step": 1} and tmp_files(tmp_path) == []


def test_real_full_disk_during_checkpoint(tmp_path):
    """A 1 MiB tmpfs really runs out of space (root only: mounting needs privileges)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                                           capture_output=True).returncode:
        pytest.skip("needs root and tmpfs mounts for a real full disk")
    try:
        with pytest.raises(WriteError, match=rf"could not write {re.escape(str(disk))}/last.ckpt: the disk is full \(.* MiB free"):
            AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(1 << 20)}, disk / "last.ckpt")
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# ---- atomic files get the mode a plain open() gives --------------------------------------------
def _write_checkpoint(folder: Path) -> Path:
    return AtomicCheckpointIO().save_checkpoint({"x": 1}, folder / "last.ckpt") or folder / "last.ckpt"


def _write_export(folder: Path) -> Path:
    from gpt_lightning import GPT, GPTConfig

    save_pretrained(GPT(GPTConfig(vocab_size=97, context_length=16, n_embd=16, n_layers=1, n_heads=2)), folder)
    return folder / "model.safetensors"


def _write_tokens(folder: Path) -> Path:
    from gpt_lightning.data.token_cache import tokenize_to_cache

    text = folder / "text.txt"
    text.write_text("Every effort moves you.\n")
    return tokenize_to_cache([text], folder / "tokens", progress=False)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
@pytest.mark.parametrize("writer", [_write_checkpoint, _write_export, _write_tokens], ids=["ckpt", "export", "tokens"])
def test_atomic_files_respect_the_umask_like_open(tmp_path, umask, writer, tokenizer):
    old = os.umask(umask)
    try:
        path = writer(tmp_path)
        plain = tmp_path / "plain"
        open(plain, "w").close()
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~umask


# ---- leftovers of killed writers ---------------------------------------------------------------
def test_only_tmp_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = atomic._HOST
    files = {
        f".last.ckpt.{host}-{dead.pid}.abc123.tmp": True,  # its writer is gone
        f".last.ckpt.{host}-{os.getpid()}.abc123.tmp": False,  # a live writer (this process)
        f".last.ckpt.otherhost-{dead.pid}.abc123.tmp": False,  # another machine's writer: unknown
        ".last.ckpt.legacy01.tmp": True,  # no writer id, untouched for two hours
        ".last.ckpt.legacy02.tmp": False,  # no writer id, fresh
        "last.ckpt": False,
    }
    for name in files:
        (tmp_path / name).write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(tmp_path / ".last.ckpt.legacy01.tmp", (two_hours_ago, two_hours_ago))
    removed = {p.name for p in remove_stale_tmp(tmp_path)}
    assert removed == {name for name, stale in files.items() if stale}
    # the lock holder of a run folder knows nobody else writes there: every tmp file goes
    assert {p.name for p in remove_stale_tmp(tmp_path, all_of_them=True)} == {
        name for name, stale in files.items() if not stale and name.endswith(".tmp")}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_atomic_tmp_file_is_named_by_its_writer(tmp_path):
    seen = []
    atomic_write(tmp_path / "f.bin", lambda tmp: seen.append(Path(tmp).name) or Path(tmp).write_bytes(b"1"))
    assert seen[0].startswith(f".f.bin.{atomic._HOST}-{os.getpid()}.") and seen[0].endswith(".tmp")
    assert remove_stale_tmp(tmp_path) == [] and (tmp_path / "f.bin").read_bytes() == b"1"


# ---- a warmup longer than the run --------------------------------------------------------------
@pytest.mark.parametrize("warmup, total, warns", [(50, 10, True), (11, 10, True), (10, 10, False), (0.5, 10, False)])
def test_warmup_longer_than_the_run_warns_with_the_numbers(tiny_config, caplog, warmup, total, warns):
    from gpt_lightning import GPT
    from gpt_lightning.train.module import GPTLitModule

    module = GPTLitModule(GPT(tiny_config), {"lr": 1e-3, "warmup": warmup})
    module.trainer = SimpleNamespace(estimated_stepping_batches=total, is_global_zero=True)
    with caplog.at_level(logging.WARNING, logger="gpt_lightning"):
        module.configure_optimizers()
    lines = [r.getMessage() for r in caplog.records if "optim.warmup" in r.getMessage()]
    if not warns:
        assert lines == []
        return
    reached = 1e-3 * total / warmup  # the linear warmup's value at the last step
    assert len(lines) == 1 and "\n" not in lines[0]
    assert f"optim.warmup={warmup} is {warmup} steps but the whole run has {total} optimizer steps" in lines[0]
    assert f"climbs to {reached:.3g} of optim.lr=0.001" in lines[0] and f"optim.warmup<={total}" in lines[0]


def test_failure_reading_an_input_inside_a_write_is_not_called_a_write_failure(tmp_path):
    def write(tmp):
        Path(tmp).write_bytes(b"half")
        open(tmp_path / "missing-input.txt").read()

    with pytest.raises(FileNotFoundError, match="missing-input.txt"):
        atomic_write(tmp_path / "out.bin", write)
    assert list(tmp_path.iterdir()) == []


# (phase of the job, what a SIGTERM / SIGUSR1 then does) -- real signals sent to this process
SIGNAL_PHASES = [("before", True), ("after", False)]


@pytest.mark.parametrize("phase, stops", SIGNAL_PHASES)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_signal_before_training_stops_at_once_and_after_training_lets_the_run_finish(phase, stops, sig, capsys):
    from gpt_lightning.train.preemption import PREEMPTION

    before = signal.getsignal(sig)
    with PREEMPTION.catching():
        if phase == "after":
            PREEMPTION.training_started()
            PREEMPTION.training_ended()
        if stops:
            with pytest.raises(SystemExit) as exit_:
                os.kill(os.getpid(), sig)
                time.sleep(1)  # the handler runs at the next bytecode; never reached
            assert exit_.value.code == 128 + sig
            assert f"preempted: stopped by {signal.Signals(sig).name} before training started" in capsys.readouterr().err
        else:
            os.kill(os.getpid(), sig)
            time.sleep(0.01)
            assert PREEMPTION.signum == sig  # noted; the finished run's files are being completed
    assert signal.getsignal(sig) is before  # the job's handlers are gone with the job


# ---- run folders: one run per folder, continued only when asked; result.json, report and card agree ----
def _card_best(out: Path) -> float | None:
    import json

    return json.loads((out / "export" / "card.json").read_text())["results"].get("best_val_loss")


def test_a_finished_run_folder_is_refused_continued_by_auto_and_resumed_elsewhere_with_its_best(tmp_path):
    import json

    first = tmp_path / "first"
    job = TINY + ["trainer.max_steps=2", "export=true"]
    done = run_job("train", first, job)  # stops at step 2 of a 4-batch epoch: validated there all the same
    assert done["best_val_loss"] is not None and (first / "checkpoints" / "best-step2.ckpt").is_file()
    assert done["best_val_loss"] == _card_best(first)
    assert json.loads((first / "export" / "card.json").read_text())["results"]["epoch"] == 0  # 2 of 4 batches: none completed
    for name in ("README.md", "card.json"):  # the card carries no absolute path of this machine
        card = (first / "export" / name).read_text()
        assert str(tmp_path) not in card and os.environ["GPT_LIGHTNING_DATA_DIR"] not in card, name
        assert str(Path.home()) not in card, name
    with pytest.raises(ConfigError, match=r"hydra.run.dir='.*first' is invalid: it holds a finished run "
                                          r"\(result.json\); continue that run with ckpt_path=auto") as err:
        run_job("train", first, job)  # a second run would mix its checkpoints with the first's
    assert "\n" not in str(err.value)
    again = run_job("train", first, job + ["ckpt_path=auto"])  # nothing left to train: the same result
    assert {k: again[k] for k in ("best_val_loss", "final_val_loss", "best_checkpoint", "global_step")} == \
           {k: done[k] for k in ("best_val_loss", "final_val_loss", "best_checkpoint", "global_step")}
    assert json.loads((first / "result.json").read_text())["best_val_loss"] == done["best_val_loss"]
    # resumed into a new folder: the first folder's best is still the best until beaten
    second = tmp_path / "second"
    resumed = run_job("train", second, TINY + ["trainer.max_steps=3", "export=true",
                                                f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"])
    assert resumed["global_step"] == 3 and resumed["best_val_loss"] is not None
    assert resumed["best_val_loss"] == min(done["best_val_loss"], resumed["final_val_loss"])
    assert resumed["best_val_loss"] == _card_best(second)
    assert Path(resumed["best_checkpoint"]).is_file() and (first / "checkpoints" / "best-step2.ckpt").is_file()
