"""`pip install .` gives working commands: the wheel is built from a copy of the checkout,
installed into a fresh virtual environment, and every job's command runs from an empty folder
outside the checkout, on a tiny config (a folder of the user's own configs included).

The venv sees the system's site-packages and the wheel goes in with ``--no-deps --no-index``:
torch, Lightning and the rest are already installed here and this machine has no internet for
a full resolve. The dependency list itself is checked by test_structure.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from helpers import ROOT, data_dir

SHIPPED = ("gpt_lightning", "conf", "pyproject.toml", "README.md")  # what the build reads
TINY = ["debug=smoke", "logger=csv", "trainer.enable_progress_bar=false", "callbacks.samples.enabled=false",
        "data.max_length=32", "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0"]
MY_MODEL = """\
_target_: gpt_lightning.model.GPTConfig
vocab_size: 50257
context_length: 32
n_embd: 32
n_layers: 1
n_heads: 2
"""


def _build_and_install(tmp: Path) -> Path:
    """The venv's bin folder, with the wheel of this checkout installed."""
    source = tmp / "source"
    source.mkdir()
    for name in SHIPPED:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (ROOT / name).is_dir() else {}))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"),
                    str(source)], check=True, capture_output=True, timeout=180)
    wheel, = (tmp / "dist").glob("gpt_lightning-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"  # the system's pip, installing into the venv
    subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=180)
    return venv / "bin"


def test_the_wheel_gives_a_command_for_every_job(tmp_path):
    data = data_dir()
    bin_dir = _build_and_install(tmp_path)
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(list(args), cwd=work, env=env, text=True, capture_output=True, timeout=300)
        assert done.returncode == 0, f"{args[0]}: {done.stderr[-2000:]}"
        return done

    where = run(str(bin_dir / "python"), "-c", "import gpt_lightning; print(gpt_lightning.__file__)").stdout
    assert Path(where.strip()).is_relative_to(bin_dir.parent), where  # the wheel's copy, not the checkout

    (work / "myconf" / "model").mkdir(parents=True)  # the user's own config folder, the Hydra way
    (work / "myconf" / "model" / "mine.yaml").write_text(MY_MODEL)
    run("gpt-train", "--config-dir", "myconf", *TINY, "model=mine", "hydra.run.dir=run")
    result = json.loads((work / "run" / "result.json").read_text())
    assert result["params"] < 2_000_000 and result["global_step"] == 2 and (work / "run" / "train.log").is_file()

    records = json.loads((data / "instruction-data.json").read_text())[:24]
    (work / "slice.json").write_text(json.dumps(records))
    run("gpt-finetune", *TINY, "init=scratch", "model=gpt2_tiny", "data.path=slice.json", "export=false",
        "finetune.responses.enabled=false", "hydra.run.dir=ft")
    assert json.loads((work / "ft" / "result.json").read_text())["global_step"] == 2

    run("gpt-export", "run/checkpoints/last.ckpt", "exported")
    assert (work / "exported" / "model.safetensors").is_file() and (work / "exported" / "README.md").is_file()

    text = run("gpt-generate", "init=checkpoint", "init.path=exported", "prompt=Hello", "max_new_tokens=4",
               "stream=false", "device=cpu").stdout
    assert "Hello" in text

    run("gpt-evaluate", "init=checkpoint", "init.path=exported", "task=perplexity", "text.data=verdict", "limit=2",
        "output_dir=scores", "progress=false", "device=cpu")
    summary = json.loads((work / "scores" / "summary.json").read_text())
    assert summary[0]["task"] == "perplexity" and summary[0]["value"] > 1

    table = run("gpt-compare", "run", "ft", "--out", "compare.png").stdout
    assert "run" in table and "ft" in table and (work / "compare.png").is_file()

    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    server = subprocess.Popen(["gpt-serve", "init=checkpoint", "init.path=exported", "port=0", "device=cpu",
                               "log_level=warning", "model_name=tiny"], cwd=work, env=env, text=True,
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        line = server.stderr.readline()
        url = re.search(r"at (http://127\.0\.0\.1:\d+) ", line).group(1)
        with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as reply:
            assert json.loads(reply.read())["data"][0]["id"] == "tiny"
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
