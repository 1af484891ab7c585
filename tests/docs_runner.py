"""Runs the code blocks of README.md and docs/*.md for tests/test_docs.py, in one process.

``python tests/docs_runner.py PLAN RESULTS`` reads the blocks that tests/test_docs.py
collected (PLAN, JSON), prepares a workspace (the current folder) with stand-ins for what a
user would have, runs every block in document order and writes one result per block
(RESULTS, JSON Lines, one line as each block ends, so a timeout still reports the rest).

Why one process: importing Lightning costs seconds of CPU, and the docs hold dozens of
commands. ``python train.py ...`` (and finetune.py, generate.py, evaluate.py, ``python -m``
modules) therefore run here with ``runpy``, exactly as the interpreter would run them (the
same ``sys.argv``, Hydra's own ``main``), one after the other. Only what must be a process of
its own is one: serve.py (a server that runs until stopped) and the ranks a DDP run starts.

What a block gets instead of the real world (this machine has no internet):

- released weights (``init=openai_*``): one tiny GPT-2 in the released layout, registered under
  every name with its own sha256, in ``$GPT_LIGHTNING_WEIGHTS_DIR``;
- HellaSwag and LAMBADA: a few records in each public format, registered with their sha256;
- ``<run>`` in a path: a tiny run made first (``outputs/train/docs``, ``outputs/finetune/docs``),
  ``<date_time>`` a sweep folder holding it, ``best-step<N>.ckpt`` its best checkpoint;
  files the examples name (``held_out.txt``, ``books/``, ``my_records.jsonl``, ``prompts.jsonl``,
  ``my_export`` ...) are written here;
- long runs get tiny overrides appended (:func:`tiny_overrides`), unless the command sets
  that key itself; servers get a free port, and ``127.0.0.1:8000`` in later blocks points there.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import io
import json
import os
import re
import runpy
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRIES = ("train.py", "finetune.py", "generate.py", "serve.py", "evaluate.py")
RUN = "docs"  # what <run> becomes
SWEEP = "fixture_sweep"  # what <date_time> becomes
TAIL = 4000  # characters of output kept per block

# Appended to a command unless it sets the key itself (a sweep over a key keeps its values).
TRAIN_TINY = {
    "data.max_length": "32", "data.batch_size": "2", "trainer.max_steps": "2", "trainer.max_epochs": "1",
    "trainer.limit_val_batches": "2", "trainer.val_check_interval": "2", "trainer.enable_progress_bar": "false", "trainer.log_every_n_steps": "1",
    "callbacks.samples.max_new_tokens": "4",
    "export": "false",  # the Hugging Face folder costs more than two tiny steps; the fixtures' runs write one
}
SCRATCH_MODEL = {"model.n_layers": "1", "model.n_embd": "64", "model.n_heads": "2"}  # any model= choice, tiny
FINETUNE_TINY = {"finetune.responses.max_new_tokens": "4", "finetune.responses.batch_size": "16"}
GENERATE_TINY = {"max_new_tokens": "8"}
EVALUATE_TINY = {"limit": "4", "progress": "false"}
DEFAULT_INIT = {"train.py": "scratch", "finetune.py": "openai_124m", "generate.py": "openai_124m",
                "serve.py": "openai_124m", "evaluate.py": "openai_124m"}


def tiny_overrides(script: str, args: list[str]) -> list[str]:
    """``args`` with the tiny overrides of ``script`` appended (keys the command sets are kept)."""
    given = {a.split("=", 1)[0].lstrip("+~") for a in args if "=" in a}
    init = next((a.split("=", 1)[1] for a in args if a.startswith("init=")), DEFAULT_INIT.get(script))
    extra: dict[str, str] = {}
    if script in ("train.py", "finetune.py"):
        extra.update(TRAIN_TINY)
        if init == "scratch" and not any(g == "model.n_heads" for g in given):
            extra.update(SCRATCH_MODEL)
        if script == "finetune.py":
            extra.update(FINETUNE_TINY)
        if "callbacks.eval.tasks" in given:  # the stand-in benchmark files are a few items, not the public sets
            extra["callbacks.eval.limit"] = "4"
        if "-m" in args or "--multirun" in args:
            extra["hydra.sweep.dir"] = f"multirun/{script[:-3]}/docs_{next(_counter)}"
            extra["hydra.sweep.subdir"] = "${hydra.job.num}"  # job folders named by the overrides get too long
        else:
            extra["hydra.run.dir"] = f"outputs/{script[:-3]}/docs_{next(_counter)}"
    elif script == "generate.py":
        extra.update(GENERATE_TINY)
    elif script == "evaluate.py":
        extra.update(EVALUATE_TINY)
    return [*args, *(f"{k}={v}" for k, v in extra.items() if k not in given)]


def _count():
    n = 0
    while True:
        n += 1
        yield n


_counter = _count()


# ---- stand-ins ------------------------------------------------------------------------------
def stand_ins(work: Path) -> None:
    """Registers the fake released weights and evaluation sets in this process."""
    import torch

    from gpt_lightning import GPT, GPTConfig, save_pretrained
    from gpt_lightning.download import DATASETS, Source, sha256_of
    from gpt_lightning.weights import sources

    weights_dir = work / "stand_ins" / "weights"
    src = work / "stand_ins" / "gpt2_tiny_released"
    config = GPTConfig(vocab_size=50257, context_length=1024, n_embd=32, n_layers=2, n_heads=2)  # GPT-2's vocab and context
    if not (src / "model.safetensors").is_file():
        torch.manual_seed(0)
        save_pretrained(GPT(config), src)
    weights = src / "model.safetensors"
    digest, size = sha256_of(weights), weights.stat().st_size
    for name, entry in list(sources.HUB_WEIGHTS.items()):
        folder = weights_dir / entry.repo
        folder.mkdir(parents=True, exist_ok=True)
        for file in ("config.json", "model.safetensors"):
            if not (folder / file).exists():
                os.symlink(src / file, folder / file)
        sources.HUB_WEIGHTS[name] = sources.HubWeights(entry.repo, entry.revision, digest, size, config)
    os.environ["GPT_LIGHTNING_WEIGHTS_DIR"] = str(weights_dir)
    os.environ["GPT_LIGHTNING_HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing is downloaded

    data = work / "stand_ins" / "data"
    data.mkdir(parents=True, exist_ok=True)
    shared = os.environ.get("GPT_LIGHTNING_DATA_DIR")
    for file in Path(shared).iterdir() if shared else ():
        if not (data / file.name).exists():
            os.symlink(file, data / file.name)
    hellaswag = [{"ind": i, "ctx": "A man is sitting on a roof. He", "label": i % 4,
                  "endings": [" is using wrap to wrap a pair of skis.", " is ripping level tiles off.",
                              " is holding a rubik's cube.", " starts pulling up roofing on a roof."]} for i in range(8)]
    lambada = [{"text": "She opened the door and looked at the garden behind the house"} for _ in range(8)]
    for name, rows in (("hellaswag_val.jsonl", hellaswag), ("lambada_test.jsonl", lambada)):
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        DATASETS[name] = Source(DATASETS[name].url, sha256_of(data / name), (data / name).stat().st_size)
    os.environ["GPT_LIGHTNING_DATA_DIR"] = str(data)


def fixtures(work: Path) -> None:
    """The runs and files the examples name (see the module docstring)."""
    from gpt_lightning.download import fetch_dataset

    verdict = fetch_dataset("the-verdict.txt").read_text()  # ../shared/data here, else downloaded once
    (work / "held_out.txt").write_text(verdict[:4000])
    for folder in ("held_out", "books/a", "books/b"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    (work / "held_out/part1.txt").write_text(verdict[4000:8000])
    (work / "books/a/one.txt").write_text(verdict[:10000])
    (work / "books/b/two.txt").write_text(verdict[10000:])
    records = json.loads(fetch_dataset("instruction-data.json").read_text())[:40]
    (work / "my_records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (work / "prompts.jsonl").write_text('{"prompt": "Every effort moves you"}\n{"prompt": "Once upon a time"}\n')
    # With the same tiny overrides as the blocks, so `ckpt_path=outputs/train/<run>/...` resumes it.
    run_entry("train.py", [f"hydra.run.dir=outputs/train/{RUN}", "export=true"])
    run_entry("finetune.py", [f"hydra.run.dir=outputs/finetune/{RUN}", "export=true"])
    export = work / "outputs/train" / RUN / "export"
    for copy in ("my_export", "big/export", "small/export"):
        shutil.copytree(export, work / copy, dirs_exist_ok=True)
    hf = work / "some_hf_gpt2_folder"
    hf.mkdir(exist_ok=True)
    for file in ("config.json", "model.safetensors"):
        shutil.copy(export / file, hf / file)
    shutil.copytree(work / "outputs/train" / RUN, work / "multirun/train" / SWEEP / f"0_{RUN}", dirs_exist_ok=True)


def fill(text: str, ports: dict[int, int]) -> str:
    """Placeholders -> the fixtures' names; the servers' documented ports -> the real ones."""
    text = text.replace("<run>", RUN).replace("<date_time>", SWEEP)
    if "best-step<N>.ckpt" in text:
        best = sorted(glob.glob(f"outputs/train/{RUN}/checkpoints/best-step*.ckpt"))
        text = text.replace("best-step<N>.ckpt", Path(best[-1]).name if best else "best-step<N>.ckpt")
    for documented, real in ports.items():
        text = text.replace(f"127.0.0.1:{documented}", f"127.0.0.1:{real}").replace(
            f"localhost:{documented}", f"127.0.0.1:{real}")
    return text


# ---- running -------------------------------------------------------------------------------
class Failed(Exception):
    pass


def run_entry(script: str, args: list[str], tiny: bool = True) -> None:
    """``python <script> args`` in this process (runpy runs it as ``__main__``)."""
    args = tiny_overrides(script, args) if tiny else args
    print("$ python", script, *args, flush=True)
    run_module_or_path(str(ROOT / script), args, path=True)


def run_module_or_path(target: str, args: list[str], path: bool) -> None:
    saved = sys.argv
    sys.argv = [target if path else target, *args]
    try:
        if path:
            runpy.run_path(target, run_name="__main__")
        else:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise Failed(f"exit code {stop.code}") from None
    finally:
        sys.argv = saved
        _reset_hydra()


def _reset_hydra() -> None:
    try:
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
    except Exception:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Servers:
    """serve.py commands: each its own process on a free port, the first kept for later blocks."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.ports: dict[int, int] = {}

    def start(self, args: list[str], env: dict) -> None:
        documented = int(next((a.split("=", 1)[1] for a in args if a.startswith("port=")), 8000))
        port = free_port()
        args = [a for a in args if not a.startswith("port=")] + [f"port={port}", "log_level=warning"]
        print("$ python serve.py", *args, flush=True)
        proc = subprocess.Popen([sys.executable, __file__, "--serve", *args], env={**os.environ, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise Failed(f"serve.py exited with {proc.returncode}:\n{proc.stdout.read()[-TAIL:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        else:
            proc.kill()
            raise Failed("serve.py did not answer /health within 180 s")
        if documented in self.ports:  # a second server on a documented port: started, checked, stopped
            self._stop(proc)
        else:
            self.ports[documented] = port
            self.procs.append(proc)

    def _stop(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise Failed("serve.py did not stop within 60 s of SIGTERM") from None
        if code != 0:
            raise Failed(f"serve.py exited with {code} on SIGTERM:\n{proc.stdout.read()[-TAIL:]}")

    def stop_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                self._stop(proc)


def words(command: str) -> list[str]:
    """The words bash makes of ``command`` (quotes removed, globs expanded, comments dropped)."""
    out = subprocess.run(["bash", "-O", "globstar", "-c", f'set -- {command}\nprintf "%s\\0" "$@"'],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise Failed(f"bash could not parse: {command}\n{out.stderr}")
    return [w for w in out.stdout.split("\0")[:-1]]


def commands(code: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comment lines and blanks dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def run_bash(code: str, servers: Servers) -> None:
    saved = dict(os.environ)
    try:
        for command in commands(code):
            run_command(command, servers)
    finally:  # `export` lasts for its block only
        os.environ.clear()
        os.environ.update(saved)


def run_command(command: str, servers: Servers) -> None:
    if has_operators(command):  # pipes, redirections, lists: bash runs the line as it is
        print("$", command, flush=True)
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
        print(done.stdout[-TAIL:], done.stderr[-TAIL:], sep="\n")
        if done.returncode != 0:
            raise Failed(f"bash exited with {done.returncode}")
        return
    argv = words(command)
    env = {}
    while argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]):
        key, _, value = argv.pop(0).partition("=")
        env[key] = value
    if not argv:
        return
    if argv[0] == "export":  # the two shell builtins examples use
        os.environ.update(a.split("=", 1) for a in argv[1:] if "=" in a)
        return
    if argv[0] == "cd":
        os.chdir(argv[1] if len(argv) > 1 else Path.cwd())
        return
    with patched_env(env):
        run_argv(argv, servers, env)


def has_operators(command: str) -> bool:
    """Whether ``command`` has an unquoted shell operator (``|``, ``&&``, ``;``, ``>`` ...)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.commenters = "#"
    try:
        return any(set(token) <= set("|&;<>()") for token in lexer)
    except ValueError:
        return False


def run_argv(argv: list[str], servers: Servers, env: dict) -> None:
    if argv[0] in ("python", "python3"):
        rest = argv[1:]
        if rest and rest[0] == "serve.py":
            servers.start(rest[1:], env)
        elif rest and rest[0] in ENTRIES:
            run_entry(rest[0], rest[1:])
        elif rest[:1] == ["-m"] and len(rest) > 1:
            print("$ python -m", *rest[1:], flush=True)
            run_module_or_path(rest[1], rest[2:], path=False)
        elif rest and rest[0].endswith(".py"):
            run_module_or_path(str(ROOT / rest[0]), rest[1:], path=True)
        else:
            raise Failed(f"no way to run {argv} here; mark the block <!-- docs-test: skip (reason) -->")
        return
    scripts = console_scripts()
    if argv[0] in scripts:  # gpt-train ...: the installed command, run here like its script
        script = argv[0].removeprefix("gpt-") + ".py"
        if script == "serve.py":
            servers.start(argv[1:], env)
            return
        args = tiny_overrides(script, argv[1:]) if script in ENTRIES else argv[1:]
        print("$", argv[0], *args, flush=True)
        module, _, func = scripts[argv[0]].partition(":")
        saved = sys.argv
        sys.argv = [argv[0], *args]
        try:
            getattr(importlib.import_module(module), func)()
        except SystemExit as stop:
            if stop.code not in (0, None):
                raise Failed(f"exit code {stop.code}") from None
        finally:
            sys.argv = saved
            _reset_hydra()
        return
    print("$", *argv, flush=True)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    print(done.stdout[-TAIL:], done.stderr[-TAIL:], sep="\n")
    if done.returncode != 0:
        raise Failed(f"{argv[0]} exited with {done.returncode}")


def console_scripts() -> dict[str, str]:
    """pyproject.toml's ``[project.scripts]``: command -> ``module:function``."""
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text()).get("project", {}).get("scripts", {})


@contextlib.contextmanager
def patched_env(env: dict):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_python(code: str, name: str) -> None:
    exec(compile(code, name, "exec"), {"__name__": "__docs__"})


def run_blocks(blocks: list[dict], results: Path, work: Path) -> None:
    servers = Servers()
    try:
        with results.open("a") as out:
            for block in blocks:
                buffer, start, error = io.StringIO(), time.monotonic(), None
                try:
                    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                        code = fill(block["code"], servers.ports)
                        if block["lang"] == "python":
                            run_python(code, block["id"])
                        else:
                            run_bash(code, servers)
                except Failed as err:
                    error = str(err)
                except BaseException:
                    error = traceback.format_exc()[-TAIL:]
                finally:
                    os.chdir(work)
                out.write(json.dumps({"id": block["id"], "error": error, "seconds": round(time.monotonic() - start, 1),
                                      "output": buffer.getvalue()[-TAIL:]}) + "\n")
                out.flush()
    finally:
        servers.stop_all()


def main(plan_file: str, results_file: str) -> None:
    work = Path.cwd()
    sys.path.insert(0, str(ROOT))
    plan = json.loads(Path(plan_file).read_text())
    results = Path(results_file)
    start, setup_error, buffer = time.monotonic(), None, io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            stand_ins(work)
            fixtures(work)
    except BaseException:
        setup_error = traceback.format_exc()[-TAIL:] + "\n" + buffer.getvalue()[-TAIL:]
    os.chdir(work)
    with results.open("a") as out:
        out.write(json.dumps({"id": "setup", "error": setup_error, "seconds": round(time.monotonic() - start, 1),
                              "output": buffer.getvalue()[-TAIL:]}) + "\n")
    if setup_error is None:
        run_blocks(plan["blocks"], results, work)


def serve_main(args: list[str]) -> None:
    """serve.py with the stand-ins registered (a process of its own)."""
    sys.path.insert(0, str(ROOT))
    stand_ins(Path.cwd())
    sys.argv = [str(ROOT / "serve.py"), *args]
    runpy.run_path(str(ROOT / "serve.py"), run_name="__main__")


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve_main(sys.argv[2:])
    else:
        main(sys.argv[1], sys.argv[2])
