"""train.py as a user runs it: smoke mode, DDP on CPU, sweeps, and sweeps with DDP."""

import json
import re
from pathlib import Path

from helpers import run_script

SMOKE = ["debug=smoke", "trainer.enable_progress_bar=false", "logger=csv", "callbacks.samples.enabled=false"]


def _results(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/result.json"))]


def test_smoke_mode_runs_every_path(tmp_path):
    proc = run_script("train.py", ["debug=smoke", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}/run"],
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    for name in ("result.json", "loss.png", "samples.txt", "config.yaml", "export/model.safetensors",
                 "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert json.loads((run / "result.json").read_text())["global_step"] == 4
    # what it prints: each line once, no tip, no warning a user cannot act on
    lines = [line.split("] - ", 1)[-1].strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    repeated = {line for line in lines if lines.count(line) > 1}
    assert not repeated, repeated
    noise = [line for line in lines if re.search(r"Tip:|FLOPs|weights_only|Warning|warn\(|\.py:\d+: ", line)]
    assert not noise, noise
    assert any(line.startswith("model: 3.3 M parameters") for line in lines)


def test_ddp_two_cpu_processes(tmp_path):
    proc = run_script("train.py", SMOKE + ["trainer.devices=2", "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path}/run"],
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    # two ranks of 2 windows of 32 tokens per step, 4 steps
    assert result["tokens_seen"] == 2 * 2 * 64 * 4
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr  # rank 1 joined the process group


def test_multirun_two_by_two(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    proc = run_script("train.py", ["-m", *SMOKE, "model.n_layers=1,2", "model.n_heads=2,4", f"hydra.sweep.dir={sweep}"],
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(sweep)
    assert sorted(tuple(r["overrides"][-2:]) for r in results) == sorted(
        (f"model.n_layers={layers}", f"model.n_heads={heads}") for layers in (1, 2) for heads in (2, 4))
    assert len({r["params"] for r in results}) == 2  # heads do not change the count, layers do
    summary = (sweep / "summary.md").read_text().splitlines()
    table = [row for row in summary if row.startswith("|")]
    assert len(table) == 2 + 4 and all("ok" in row for row in table[2:])
    assert (sweep / "summary.csv").is_file()
    # the comparison plot, linked from the summary, and `python -m gpt_lightning.runs.compare` on the sweep
    assert "![validation loss against tokens seen](compare.png)" in summary
    assert (sweep / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from gpt_lightning.runs.compare import main as compare

    (sweep / "compare.png").unlink()
    assert compare([str(sweep)]) == sweep / "compare.png" and (sweep / "compare.png").is_file()
    rows = [row for row in capsys.readouterr().out.splitlines() if row.startswith("| ")][1:]
    by_job = {row.split(" | ")[0].lstrip("| "): row for row in rows}
    for job in sweep.glob("*/result.json"):
        result = json.loads(job.read_text())
        label = " ".join(o for o in result["overrides"] if o.startswith("model."))  # what differs between jobs
        assert by_job[job.parent.name].split(" | ")[1] == label
        assert f"{result['best_val_loss']:.4f}" in by_job[job.parent.name]


def test_multirun_with_ddp_runs_each_job_once_with_two_ranks(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_script("train.py", ["-m", *SMOKE, "model.n_layers=1,2", "trainer.devices=2", "trainer.accelerator=cpu",
                                   f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=400)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert output.count("Launching 2 jobs locally") == 1  # rank 1 did not start a sweep of its own
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2, jobs
    for result in _results(sweep):
        assert result["tokens_seen"] == 2 * 2 * 64 * 4  # both ranks trained in every job
    # nothing was written outside the sweep folder (a stray sweep or run of rank 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]
