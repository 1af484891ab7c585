"""Two simulated nodes (one process each, gloo on 127.0.0.1) started the ways clusters start a
job: Lightning's environment-variable launch, torchrun (c10d rendezvous, elastic restart) and
srun (the variables a real srun sets). Each node runs train.py through tests/fault_runner.py.

The runs are shared between the tests below (module fixtures); every run trains 6 steps of a
tiny GPT-2 with epochs of 3 batches and data.batch_size=2 per rank, so a global batch of 4:

- ``one_node``: one process, data.batch_size=4 (the same global batch);
- ``env_launch``: MASTER_ADDR / NODE_RANK / WORLD_SIZE, nodes started 1 s apart, run.name
  given: the uninterrupted two-node run every interrupted one must equal bit for bit;
- ``torchrun``: ``torchrun --rdzv-backend=c10d --rdzv-id=job7 --max-restarts=1``, rank 1 killed
  (-9) as step 5 starts: torchrun restarts both workers and ckpt_path=auto resumes them;
- ``srun``: SLURM job 4242 (its id names the folder), SIGUSR1 sent to rank 1 alone during the
  last step of epoch 1: both ranks validate, stop, exit 138, the job requeues itself once;
  the requeued job (the same command) resumes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import ROOT, data_dir, run_job

ARGS = ["model=gpt2_tiny", "data.max_length=32", "trainer.enable_progress_bar=false",
        "trainer.max_steps=6", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
        "callbacks.samples.enabled=false", "optim.warmup=2", "logger=csv", "ckpt_path=auto",
        "callbacks.checkpoint.every_n_minutes=null"]  # last.ckpt after every validation: the state a resume takes
NODES = ["data.batch_size=2", "trainer.num_nodes=2", "trainer.devices=1", "strategy=ddp"]
TIMEOUT_S = 240


def _free_port(low: int = 0) -> int:
    for port in ([0] if not low else range(low, low + 2000)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def _env(root: Path, extra: dict) -> dict:
    data_dir()
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
            "PYTHONWARNINGS": "ignore", "GPT_LIGHTNING_CACHE": str(root / "cache"),
            # the checkout's package, also for processes started outside it (submitit's jobs)
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), **extra}


class Nodes:
    """Processes of one simulated job; ``wait()`` returns their exit codes and keeps their output."""

    def __init__(self, root: Path, commands: list[tuple[list[str], dict]], stagger: float = 1.0) -> None:
        self.root, self.procs, self.logs = root, [], []
        for i, (command, env) in enumerate(commands):
            log = root / f"node{len(list(root.glob('node*.log')))}.log"
            self.logs.append(log)
            self.procs.append(subprocess.Popen(command, cwd=root, env=env, stdout=open(log, "w"),
                                               stderr=subprocess.STDOUT, start_new_session=True))
            if i + 1 < len(commands):
                time.sleep(stagger)  # nodes never start at the same instant

    def wait(self, timeout: float = TIMEOUT_S) -> list[int]:
        deadline = time.monotonic() + timeout
        try:
            for proc in self.procs:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            self.kill()
        return [proc.returncode for proc in self.procs]

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def output(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-4000:]}" for log in self.logs)


def runner(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "tests" / "fault_runner.py"), *ARGS, *NODES, *args]


def _env_launch_envs(root: Path, extra: dict | None = None) -> list[dict]:
    port = _free_port()
    return [_env(root, {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(rank),
                        "WORLD_SIZE": "2", **(extra or {})}) for rank in (0, 1)]


def env_launch(root: Path, args: list[str], extra: dict | None = None, stagger: float = 1.0) -> Nodes:
    """Lightning's own launch: the same command on each node, MASTER_ADDR/PORT, NODE_RANK, WORLD_SIZE."""
    return Nodes(root, [(runner(*args), env) for env in _env_launch_envs(root, extra)], stagger)


def srun(root: Path, job: int, args: list[str], extra: dict | None = None) -> Nodes:
    """What ``srun`` inside ``sbatch --nodes=2 --ntasks-per-node=1`` gives each task."""
    commands = []
    for rank in (0, 1):
        env = _env(root, {"SLURM_JOB_ID": str(job), "SLURM_JOBID": str(job), "SLURM_JOB_NAME": "train",
                          "SLURM_NNODES": "2", "SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS": "2",
                          "SLURM_NPROCS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS_PER_NODE": "1",
                          "SLURM_TASKS_PER_NODE": "1(x2)", "SLURM_NODELIST": "localhost",
                          "SLURM_JOB_NODELIST": "localhost", "SLURM_STEP_NODELIST": "localhost",
                          "SLURM_STEP_ID": "0", "SLURM_PROCID": str(rank), "SLURM_LOCALID": "0",
                          "SLURM_NODEID": str(rank), "SLURM_CPUS_ON_NODE": "1", **(extra or {})})
        commands.append((runner(*args), env))
    return Nodes(root, commands)


def weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 6
    return ckpt["state_dict"]


def run_folders(root: Path) -> list[Path]:
    return sorted(p for p in (root / "outputs" / "train").iterdir() if p.is_dir())


def assert_one_set_of_artifacts(run: Path) -> None:
    """What global rank 0 alone writes, written once."""
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best-step6.ckpt", "last.ckpt"]
    # the last validation was the best: last.ckpt is a second name of best-step6.ckpt, not a copy
    assert (run / "checkpoints" / "last.ckpt").stat().st_ino == (run / "checkpoints" / "best-step6.ckpt").stat().st_ino
    assert (run / "result.json").is_file() and (run / "export" / "model.safetensors").is_file()
    assert len(list((run / "csv").glob("metrics*.csv"))) == 1 and not list(run.glob("*rank*"))


@pytest.fixture(scope="module")
def one_node(tmp_path_factory):
    """One process with the two nodes' global batch."""
    out = tmp_path_factory.mktemp("one_node") / "run"
    run_job("train", out, ARGS + ["data.batch_size=4", "export=false"])
    return weights(out)


@pytest.fixture(scope="module")
def env_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("env_launch")
    nodes = env_launch(root, ["run.name=job1"])
    codes = nodes.wait()
    assert codes == [0, 0], nodes.output()
    return root, nodes


def test_env_launch_two_nodes_one_folder_same_weights_as_one_node(env_run, one_node):
    """No deadlock: global rank 0 alone takes the lock and writes the artifacts, into the one
    folder run.name names; the weights equal one node's with the same global batch."""
    root, nodes = env_run
    assert run_folders(root) == [root / "outputs" / "train" / "job1"]
    run = run_folders(root)[0]
    assert_one_set_of_artifacts(run)
    two = weights(run)
    for key, value in one_node.items():
        torch.testing.assert_close(two[key], value, rtol=1e-4, atol=2e-5, msg=key)
    assert max((two[k] - v).abs().max().item() for k, v in one_node.items()) > 0  # really another computation


def _history(run: Path) -> dict:
    return json.loads((run / "history.json").read_text())


def _csv_rows(run: Path) -> list[tuple]:
    import csv

    with open(run / "csv" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rate = ("step", "train/tokens_per_s")  # a rate needs the time of the previous row: none after a resume
    return sorted((row["step"], tuple(sorted(k for k, v in row.items() if v and k not in rate))) for row in rows)


def _wait_for(path: Path, nodes: Nodes, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline and all(p.poll() is None for p in nodes.procs):
        time.sleep(0.05)
    if not path.exists():
        nodes.kill()
        pytest.fail(f"{path.name} never appeared:\n{nodes.output()}")


def test_srun_sigusr1_to_rank_1_at_epoch_end_stops_all_requeues_once_and_resumes_bit_exactly(env_run, tmp_path):
    """SIGUSR1 reaches rank 1 only, during the last step of epoch 1: both ranks validate
    (the checkpoint holds that validation), write one last.ckpt (a link to the best checkpoint
    of the same step), exit 138; rank 0 requeues the job once. The requeued job resumes to the
    weights, loss history and metrics.csv rows of the uninterrupted run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    (bin_dir / "scontrol").chmod(0o755)
    job = 40000 + _free_port(15000) - 15000  # Lightning's SLURM port: 15000 + the id's last 4 digits
    path = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    marker = tmp_path / "rank1-at-step-2"
    nodes = srun(tmp_path, job, [], {**path, "FAULT": f"wait-step:2:{marker}", "FAULT_RANK": "1"})
    _wait_for(marker, nodes)
    os.kill(int(marker.read_text()), signal.SIGUSR1)
    codes = nodes.wait()
    out = nodes.output()
    assert codes == [138, 138], out
    assert "preempted: stopped by SIGUSR1 after step 3: " in out and f"requeued SLURM job {job}" in out
    assert (tmp_path / "scontrol.log").read_text() == f"requeue {job}\n"  # once, by rank 0
    run = tmp_path / "outputs" / "train" / f"slurm-{job}"
    assert run_folders(tmp_path) == [run]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3 and len(ckpt["callbacks"]["LossHistory"]["val"]) == 1  # validated first
    best = run / "checkpoints" / "best-step3.ckpt"
    assert best.stat().st_ino == (run / "checkpoints" / "last.ckpt").stat().st_ino  # one copy, two names

    requeued = srun(tmp_path, job, [], path)  # SLURM starts the same script again
    codes = requeued.wait()
    assert codes == [0, 0], requeued.output()
    assert "ckpt_path=auto: resuming from" in requeued.output()
    reference = run_folders(env_run[0])[0]
    resumed, uninterrupted = weights(run), weights(reference)
    for key in uninterrupted:
        assert torch.equal(resumed[key], uninterrupted[key]), key
    assert _history(run) == _history(reference)  # epoch 1's validation included
    assert _csv_rows(run) == _csv_rows(reference)  # the rows before the resume kept, none twice
    assert (tmp_path / "scontrol.log").read_text() == f"requeue {job}\n"


def test_torchrun_rendezvous_names_the_folder_and_trains_as_the_env_launch(env_run, tmp_path):
    """torchrun with c10d rendezvous: its --rdzv-id names the one run folder, rank 0 alone writes
    the artifacts, and the weights equal the environment-variable launch's bit for bit."""
    port = _free_port()
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=job7", "--max-restarts=0",
               "--local-addr=127.0.0.1", str(ROOT / "tests" / "fault_runner.py"), *ARGS, *NODES]
    nodes = Nodes(tmp_path, [(command, _env(tmp_path, {})), (command, _env(tmp_path, {}))])
    codes = nodes.wait()
    assert codes == [0, 0], nodes.output()
    run = tmp_path / "outputs" / "train" / "torchrun-job7"
    assert run_folders(tmp_path) == [run]
    assert_one_set_of_artifacts(run)
    ours, theirs = weights(run), weights(run_folders(env_run[0])[0])
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key


def test_ranks_with_different_run_folders_refuse_and_a_waiting_rank_obeys_sigterm(tmp_path):
    """Nodes given two folders stop, each with one line, before anything is saved. A rank
    whose peers never come (blocked in init_process_group) still stops at SIGTERM."""
    alone = tmp_path / "alone"
    alone.mkdir()
    waiting = env_launch(alone, ["run.name=alone"], stagger=0.0)
    os.killpg(waiting.procs[0].pid, signal.SIGKILL)  # node 0 never comes
    waiting.procs[0].wait()
    nodes = Nodes(tmp_path, [(runner(f"hydra.run.dir=outputs/train/{name}"), env) for name, env in
                             zip("ab", _env_launch_envs(tmp_path))])
    deadline = time.monotonic() + TIMEOUT_S
    while "Initializing distributed" not in waiting.logs[1].read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    sent = time.monotonic()
    os.killpg(waiting.procs[1].pid, signal.SIGTERM)
    waiting.procs[1].wait(timeout=30)
    assert waiting.procs[1].returncode == 143 and time.monotonic() - sent < 10
    assert "preempted: stopped by SIGTERM before training started" in waiting.logs[1].read_text()
    codes = nodes.wait()
    out = nodes.output()
    assert codes == [2, 2], out
    lines = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(lines) == 2 and all("the ranks of this job chose different run folders: rank 0 writes into "
                                   f"{tmp_path / 'outputs' / 'train' / 'a'}" in line for line in lines)
    assert "Traceback" not in out and not list(tmp_path.glob("outputs/train/*/checkpoints/*.ckpt"))


def test_a_hung_node_stops_the_others_after_strategy_timeout_s(tmp_path):
    """Rank 1 hangs (SIGSTOP, as a dead machine that closes no connection) as step 5 starts:
    rank 0 waits strategy.timeout_s, then stops with one line saying how to resume, and
    last.ckpt holds the last good state (step 3), which ckpt_path=auto resumes (as in the
    srun test above)."""
    nodes = env_launch(tmp_path, ["run.name=hung", "strategy.timeout_s=8"], {"FAULT": "stop-step:4", "FAULT_RANK": "1"})
    try:
        nodes.procs[0].wait(timeout=TIMEOUT_S)
    finally:
        nodes.kill()
    out = nodes.output()
    assert nodes.procs[0].returncode == 1, out
    line = next(line for line in out.splitlines() if line.startswith("error: "))
    assert re.fullmatch(r"error: another rank stopped answering \(strategy.timeout_s=8\): .*[Tt]imed out.*; this rank "
                        r"stops too\. When every node is back, start the same command with ckpt_path=auto to resume "
                        r"from the last checkpoint", line), line
    ckpt = torch.load(tmp_path / "outputs/train/hung/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3


def test_submitit_local_sweep_with_a_two_device_job_and_its_summary(tmp_path):
    """hydra/launcher=local (submitit): a 2-point sweep, one point with trainer.devices=2, whose
    second rank re-runs train.py (not submitit's entry); summary.md lists both jobs."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    args = [a for a in ARGS if a not in ("ckpt_path=auto", "logger=csv")]
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=local", *args,
                           "logger=none", "export=false", "data.batch_size=2", "trainer.max_steps=2",
                           "trainer.devices=1,2", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, env=_env(tmp_path, {}), capture_output=True, text=True, timeout=TIMEOUT_S)
    logs = "\n".join(p.read_text()[-2000:] for p in sweep.glob(".submitit/*/*.err"))
    assert proc.returncode == 0, proc.stderr[-3000:] + logs
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/result.json"))]
    assert [r["overrides"][-1] for r in results] == ["trainer.devices=1", "trainer.devices=2"], logs
    assert all(r["global_step"] == 2 for r in results)
    summary = (sweep / "summary.md").read_text()
    assert summary.count("| ok") == 2 and "trainer.devices=2" in summary, summary


def test_async_checkpoint_io_copies_at_save_writes_in_order_and_reports_errors(tmp_path):
    """The background writer saves the tensors as they were when save_checkpoint returned,
    links after the write it names, and a failed write is raised in the training thread."""
    from gpt_lightning.atomic import WriteError
    from gpt_lightning.train.checkpoint_io import AsyncAtomicCheckpointIO

    io = AsyncAtomicCheckpointIO()
    weights_now = torch.arange(1 << 16, dtype=torch.float32)
    io.save_checkpoint({"w": weights_now}, tmp_path / "best-step1.ckpt")
    weights_now += 1  # training goes on while the file is written
    io.link_checkpoint(tmp_path / "best-step1.ckpt", tmp_path / "last.ckpt")
    io.wait()
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["w"]
    assert torch.equal(saved, torch.arange(1 << 16, dtype=torch.float32))
    assert (tmp_path / "last.ckpt").stat().st_ino == (tmp_path / "best-step1.ckpt").stat().st_ino
    (tmp_path / "a_file").write_text("")
    io.save_checkpoint({"w": weights_now}, tmp_path / "a_file" / "last.ckpt")  # returns at once
    with pytest.raises(WriteError, match=r"cannot write .*a_file/last.ckpt"):
        io.wait()
