"""The short report train.py and finetune.py print when a run ends: where everything is, the
numbers that matter, and the exact commands to look at, use or continue the run."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Mapping, Sequence


def short_path(path) -> str:
    """``path`` relative to the working folder when it is below it (shorter commands to copy)."""
    path = Path(str(path))
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _loss(loss, ppl) -> str:
    return "n/a" if loss is None else f"{loss:.4f} (perplexity {ppl:,.2f})"


def resume_command(command: str | None, run_dir: Path) -> str | None:
    """``command`` without its ckpt_path / hydra.run.dir, continuing from the run's last.ckpt."""
    if not command:
        return None
    words = [w for w in shlex.split(command) if not w.startswith(("ckpt_path=", "hydra.run.dir=", "-m", "--multirun"))]
    last = short_path(Path(run_dir) / "checkpoints" / "last.ckpt")
    return shlex.join(words + [f"ckpt_path={last}", f"hydra.run.dir={short_path(run_dir)}"])


def format_report(result: Mapping, run_dir: Path, trackers: Sequence[tuple[str, str]] = (),
                  command: str | None = None, instruct_prompt: str | None = None, use_command: str | None = None) -> str:
    """The end-of-run report as text."""
    r = result
    lines = [f"Run finished: {short_path(run_dir)}/",
             f"  validation loss  best {_loss(r.get('best_val_loss'), r.get('best_val_perplexity'))}, "
             f"last {_loss(r.get('final_val_loss'), r.get('final_val_perplexity'))}"]
    session = r.get("tokens_this_run")
    if session is not None and r.get("train_time_s"):
        rate = f", {r['tokens_per_s']:,.0f} tokens/s" if r.get("tokens_per_s") else ""
        lines.append(f"  trained          {session:,} tokens in {r['train_time_s']:,.1f} s{rate} "
                     f"(step {r.get('global_step')}, {r.get('tokens_seen', 0):,} tokens seen in all)")
    lines.append(f"  trainer.fit      {r.get('time_s')} s with data set-up, validation and samples; "
                 f"{r.get('params', 0):,} parameters")
    if r.get("best_checkpoint"):
        lines.append(f"  best checkpoint  {short_path(r['best_checkpoint'])}")
    if r.get("export"):
        lines.append(f"  export           {short_path(r['export'])}/ (weights, tokenizer, model card README.md; "
                     "transformers opens it as it is)")
    for kind, where in trackers:
        if kind in ("wandb", "mlflow", "csv"):
            lines.append(f"  {kind:<16} {where}")
    lines.append("Next:")
    for kind, where in trackers:
        if kind == "tensorboard":
            lines.append(f"  {where}")
    if r.get("export") and use_command:  # e.g. a classifier: evaluate.py, not generate.py
        lines.append(f"  {use_command}")
    elif r.get("export"):
        program = "gpt-generate" if (command or "").startswith("gpt-") else "python generate.py"  # installed: gpt-train ...
        generate = f"{program} init=checkpoint init.path={short_path(r['export'])}"
        if instruct_prompt:
            generate += f" instruct=true prompt={shlex.quote(instruct_prompt)}"
        lines.append(f"  {generate}")
    resume = resume_command(command, run_dir)
    if resume:
        lines.append(f"  {resume}   # resume if interrupted")
    return "\n".join(lines)
