"""The model card (``README.md`` of an export) and the record of a run it is written from.

:class:`RunRecord` is a callback that notes what a card needs and the Trainer alone does not
keep: the resolved config, the data (files, the token cache's content hash, token counts),
each session's command line, code version, devices, precision, training time and tokens. It
is saved in every checkpoint, so ``python -m gpt_lightning.weights.export <ckpt>`` writes the same
card from a checkpoint as the run writes at its end.

:func:`card_facts` joins a record with the weights' numbers (architecture, loss history,
tokens, step) into one plain dict; :func:`render_card` turns that dict into a Hugging Face
model card: YAML front matter (license, tags, base model, model-index) and markdown.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import yaml

from gpt_lightning.train.module import perplexity

CARD_FILE = "README.md"
DEFAULT_LICENSE = "mit"  # conf/train.yaml and conf/finetune.yaml `card.license` (a test keeps them equal)
LOSS_PLOT = "loss.png"


# ---- the record ------------------------------------------------------------------------------
class RunRecord(L.Callback):
    """Collects what the model card says about a run; kept in checkpoints across resumes."""

    def __init__(self, config: Mapping, command: str | None = None) -> None:
        self.config = dict(config)
        self.command = command
        self.data: dict = {}
        self.previous: list[dict] = []  # sessions before a resume, from the checkpoint
        self.current: dict = {}
        self._start: tuple[float, int, int] | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        self.data = data_facts(trainer.datamodule) if trainer.datamodule is not None else {}
        self.current = {
            "command": self.command,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "code": code_version(),
            "devices": trainer.world_size,
            "accelerator": type(trainer.accelerator).__name__.removesuffix("Accelerator").lower(),
            "strategy": type(trainer.strategy).__name__,
            "precision": str(trainer.precision),
        }

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self._start = (time.perf_counter(), pl_module.tokens_seen, trainer.global_step)
        self.current.update(start_step=trainer.global_step, start_tokens=pl_module.tokens_seen)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if self._start is None:
            return
        t0, tokens0, _ = self._start
        seconds = time.perf_counter() - t0
        tokens = pl_module.tokens_seen - tokens0
        self.current.update(end_step=trainer.global_step, tokens=tokens, train_time_s=round(seconds, 2),
                            tokens_per_s=round(tokens / seconds, 1) if seconds > 0 else None)

    def sessions(self) -> list[dict]:
        return self.previous + ([self.current] if self.current else [])

    def state_dict(self) -> dict:
        return {"config": self.config, "data": self.data, "sessions": self.sessions()}

    def load_state_dict(self, state: dict) -> None:
        self.previous = list(state.get("sessions", []))


def portable_names(files: list[str]) -> dict[str, str]:
    """Each file's name as the card shows it: relative to the files' common folder (just the
    name for one file), so no card carries this machine's absolute paths."""
    import os

    if not files:
        return {}
    parents = [str(Path(f).parent) for f in files]
    try:
        common = os.path.commonpath(parents)
    except ValueError:  # different drives
        return {f: Path(f).name for f in files}
    return {f: os.path.relpath(f, common) for f in files}


def data_facts(datamodule) -> dict:
    """Files, content hash and sizes of a pretraining or instruction data module (after setup)."""
    from gpt_lightning.data.token_cache import corpus_key

    facts: dict[str, Any] = {"batch_size": getattr(datamodule, "batch_size", None),
                             "max_length": getattr(datamodule, "max_length", None)}
    token_file = getattr(datamodule, "token_file", None)
    if token_file is not None:  # data/pretrain.py
        token_file = Path(token_file)
        meta_file = token_file.with_suffix(".json")
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        train = getattr(datamodule, "train_set", None)
        files = [str(f) for f in meta.get("files", [])]
        names = portable_names(files)
        facts.update(kind="pretraining", name=getattr(datamodule, "name", None),
                     files=[names[f] for f in files],
                     tokens_per_file={names.get(str(f), Path(f).name): n
                                      for f, n in meta.get("tokens_per_file", {}).items()},
                     token_cache=token_file.name, content_hash=token_file.stem,
                     tokens=getattr(datamodule, "num_tokens", meta.get("num_tokens")),
                     train_tokens=(train.end - train.start) if train is not None else None,
                     val_fraction=getattr(datamodule, "val_fraction", None), stride=getattr(datamodule, "stride", None))
    elif hasattr(datamodule, "train_records"):  # data/instruct.py
        from gpt_lightning.data.instruct import DATASET_NAME
        from gpt_lightning.download import fetch_dataset

        path = fetch_dataset(DATASET_NAME, datamodule.path)
        examples = getattr(datamodule, "_examples", {})
        facts.update(kind="instruction", files=[Path(path).name], content_hash=corpus_key([path]),
                     records={s: len(getattr(datamodule, f"{s}_records")) for s in ("train", "val", "test")},
                     tokens={s: sum(e.num_tokens for e in ex) for s, ex in examples.items()},
                     mask_prompt=getattr(datamodule, "mask_prompt", None))
    return facts


def code_version() -> dict:
    """This package's version and, in a git checkout, its commit (and whether it had local changes)."""
    from gpt_lightning import __version__

    root = Path(__file__).resolve().parents[1]
    version = {"package": __version__, "commit": None, "dirty": None}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode == 0:
            version["commit"] = commit.stdout.strip()
            status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10)
            version["dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return version


# ---- facts --------------------------------------------------------------------------------------
def card_facts(*, model_config: Mapping, params: int, record: Mapping | None, history: Mapping | None,
               global_step: int | None, tokens_seen: int | None, epoch: int | None = None,
               extra_results: Mapping | None = None, source: str | None = None) -> dict:
    """Everything the card states, as plain data (also written to ``card.json`` beside it)."""
    record = dict(record or {})
    config = dict(record.get("config") or {})
    val = [list(p) for p in (history or {}).get("val", [])]
    results: dict[str, Any] = {"global_step": global_step, "tokens_seen": tokens_seen, "epoch": epoch}
    if val:
        best = min(val, key=lambda p: p[1])
        results.update(best_val_loss=best[1], best_val_perplexity=perplexity(best[1]), best_val_tokens=best[0],
                       last_val_loss=val[-1][1], last_val_perplexity=perplexity(val[-1][1]), last_val_tokens=val[-1][0],
                       validations=len(val))
    for key, value in dict(extra_results or {}).items():
        results.setdefault(key, value)
    card = dict(config.get("card") or {})
    return {
        "model": dict(model_config), "params": params, "init": dict(config.get("init") or {}),
        "data": dict(record.get("data") or {}), "config": config, "sessions": list(record.get("sessions") or []),
        "results": results, "license": card.get("license") or DEFAULT_LICENSE, "tags": list(card.get("tags") or []),
        "source": source,
    }


# ---- rendering ----------------------------------------------------------------------------------
def render_card(facts: Mapping, has_plot: bool = False) -> str:
    """The model card: YAML front matter the Hugging Face hub reads, then markdown."""
    m, r, data = facts["model"], facts["results"], facts.get("data") or {}
    name = _title(facts)
    front = {"license": facts["license"], "library_name": "transformers", "pipeline_tag": "text-generation",
             "tags": ["gpt2", "text-generation", "gpt_lightning", "pytorch-lightning", *facts["tags"]]}
    base = _base_model(facts.get("init") or {})
    if base:
        front["base_model"] = base
    if r.get("best_val_loss") is not None:
        front["model-index"] = [{"name": name, "results": [{
            "task": {"type": "text-generation", "name": "Causal language modeling"},
            "dataset": {"type": data.get("kind", "text"), "name": _data_name(data)},
            "metrics": [{"type": "loss", "name": "best validation loss", "value": round(r["best_val_loss"], 4)},
                        {"type": "perplexity", "name": "best validation perplexity",
                         "value": round(r["best_val_perplexity"], 3)}]}]}]
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "", f"# {name}", ""]
    lines += [_summary(facts), ""]
    lines += _model_section(facts) + _init_section(facts) + _data_section(data) + _recipe_section(facts)
    lines += _results_section(facts, has_plot) + _usage_section(facts) + _provenance_section(facts)
    return "\n".join(lines).rstrip() + "\n"


def _title(facts: Mapping) -> str:
    m = facts["model"]
    size = f"{facts['params'] / 1e6:.1f}M" if facts["params"] >= 1e5 else f"{facts['params']:,}-parameter"
    return f"GPT-2 {size} ({m['n_layers']} layers, {m['n_embd']} wide)"


def _base_model(init: Mapping) -> str | None:
    from gpt_lightning.weights.sources import HUB_WEIGHTS

    entry = HUB_WEIGHTS.get(init.get("name"))
    return entry.repo if entry else None


def _data_name(data: Mapping) -> str:
    files = data.get("files") or []
    if not files:
        return "unknown"
    names = [Path(f).name for f in files]
    return names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more files"


def _summary(facts: Mapping) -> str:
    r, data, sessions = facts["results"], facts.get("data") or {}, facts.get("sessions") or []
    if not sessions:
        return (f"A GPT-2-architecture causal language model exported by gpt_lightning from `{facts.get('source')}`. "
                "No training record came with these weights, so only the architecture is described.")
    kind = "instruction-tuned" if data.get("kind") == "instruction" else "pretrained"
    tokens = f"{r['tokens_seen']:,} tokens" if r.get("tokens_seen") is not None else "an unknown number of tokens"
    return (f"A GPT-2-architecture causal language model {kind} with "
            f"gpt_lightning on {_data_name(data)}: {r.get('global_step')} optimizer steps, "
            f"{tokens}. The weights are those after the last step, in the layout of OpenAI's GPT-2 "
            "(`GPT2LMHeadModel`), with the GPT-2 tokenizer.")


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    out = ["| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows if v is not None and v != ""]
    return out + [""]


def _model_section(facts: Mapping) -> list[str]:
    m = facts["model"]
    rows = [("parameters", f"{facts['params']:,}"), ("layers", m.get("n_layers")), ("attention heads", m.get("n_heads")),
            ("embedding width", m.get("n_embd")), ("context length", m.get("context_length")),
            ("vocabulary", f"{m.get('vocab_size'):,} (GPT-2 BPE)"), ("dropout", m.get("dropout")),
            ("q/k/v bias, other biases", f"{m.get('qkv_bias')}, {m.get('bias')}"),
            ("output layer", "tied to the token embedding" if m.get("tie_embeddings", True) else "separate matrix")]
    return ["## Model", ""] + _table(rows)


def _init_section(facts: Mapping) -> list[str]:
    init = facts.get("init") or {}
    name = init.get("name")
    if not name:
        return []
    base = _base_model(init)
    if name == "scratch":
        text = "Random GPT-2 initialisation (`init=scratch`): normal(0, 0.02), residual projections scaled by 1/sqrt(2 n_layers)."
    elif base:
        text = f"OpenAI's released GPT-2 weights, [`{base}`](https://huggingface.co/{base}) (`init={name}`)."
    else:
        text = f"The weights at `{init.get('path')}` (`init={name}`)."
    return ["## Starting weights", "", text, ""]


def _data_section(data: Mapping) -> list[str]:
    if not data:
        return []
    files = data.get("files") or []
    shown = ", ".join(f"`{f}`" for f in files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    rows = [("kind", data.get("kind")), ("files", shown), ("content hash", f"`{data.get('content_hash')}`" if data.get("content_hash") else None)]
    if data.get("kind") == "pretraining":
        rows += [("tokens", f"{data['tokens']:,}" if data.get("tokens") is not None else None),
                 ("training / validation tokens", f"{data['train_tokens']:,} / {data['tokens'] - data['train_tokens']:,}"
                  if data.get("train_tokens") is not None and data.get("tokens") is not None else None),
                 ("token cache", f"`{data.get('token_cache')}`"),
                 ("window, stride", f"{data.get('max_length')}, {data.get('stride')}")]
    elif data.get("kind") == "instruction":
        rec, tok = data.get("records") or {}, data.get("tokens") or {}
        rows += [("records train / val / test", " / ".join(f"{rec.get(s, 0):,}" for s in ("train", "val", "test"))),
                 ("tokens train / val / test", " / ".join(f"{tok.get(s, 0):,}" for s in ("train", "val", "test"))),
                 ("loss on", "responses only" if data.get("mask_prompt") else "prompts and responses"),
                 ("max length", data.get("max_length"))]
    note = ("The content hash is the first 24 hex digits of the sha256 of the files' bytes (in order) and of "
            "the tokenizer's name (`gpt_lightning.data.token_cache.corpus_key`): the same hash, the same data"
            + ("; the token cache is named by it." if data.get("kind") == "pretraining" else "."))
    return ["## Data", ""] + _table(rows) + [note, ""]


def _recipe_section(facts: Mapping) -> list[str]:
    config, sessions = facts.get("config") or {}, facts.get("sessions") or []
    if not config:
        return []
    o, t, data = config.get("optim") or {}, config.get("trainer") or {}, facts.get("data") or {}
    last = sessions[-1] if sessions else {}
    devices = last.get("devices") or 1
    accumulate = t.get("accumulate_grad_batches") or 1
    batch = data.get("batch_size")
    tokens_per_step = (batch * data["max_length"] * devices * accumulate
                       if batch and data.get("max_length") and data.get("kind") == "pretraining" else None)
    rows = [("optimizer", f"AdamW, lr {o.get('lr')}, betas {o.get('betas')}, eps {o.get('eps')}, "
                          f"weight decay {o.get('weight_decay')} (matrices{', embeddings' if o.get('decay_embeddings') else ''})"),
            ("schedule", f"linear warmup ({o.get('warmup')}), cosine decay to {o.get('min_lr') or 'lr / 10'}"),
            ("batch", f"{batch} per device x {devices} device(s) x {accumulate} accumulation"
                      + (f" = {tokens_per_step:,} tokens per step" if tokens_per_step else "")),
            ("steps, epochs completed", f"{facts['results'].get('global_step')}, {facts['results'].get('epoch')}"),
            ("gradient clipping", t.get("gradient_clip_val")), ("precision", last.get("precision")),
            ("devices", f"{devices} x {last.get('accelerator')} ({last.get('strategy')})" if last else None),
            ("seed", config.get("seed"))]
    lora = ((config.get("finetune") or {}).get("lora") or {})
    if lora.get("rank"):
        rows.append(("LoRA", f"rank {lora['rank']}, alpha {lora.get('alpha')}, targets {lora.get('targets')} "
                             "(merged into these weights)"))
    return ["## Training recipe", ""] + _table(rows)


def _fmt(value: Any, digits: int = 4) -> Any:
    return f"{value:.{digits}f}" if isinstance(value, float) else value


def _results_section(facts: Mapping, has_plot: bool) -> list[str]:
    r = facts["results"]
    rows = [("validation loss, best", f"{_fmt(r['best_val_loss'])} (perplexity {_fmt(r['best_val_perplexity'], 2)}) "
                                      f"after {r['best_val_tokens']:,} tokens" if r.get("best_val_loss") is not None else None),
            ("validation loss, last", f"{_fmt(r['last_val_loss'])} (perplexity {_fmt(r['last_val_perplexity'], 2)}) "
                                      f"after {r['last_val_tokens']:,} tokens" if r.get("last_val_loss") is not None else None),
            ("validations", r.get("validations")),
            ("tokens seen by these weights", f"{r['tokens_seen']:,}" if r.get("tokens_seen") is not None else None),
            ("optimizer steps", r.get("global_step"))]
    skip = {"global_step", "tokens_seen", "epoch", "validations"} | {k for k in r if k.startswith(("best_val", "last_val"))}
    rows += [(k.replace("_", " "), _fmt(v)) for k, v in r.items() if k not in skip and isinstance(v, (int, float, str))]
    lines = ["## Results", ""] + _table(rows)
    if r.get("best_val_loss") is not None:
        lines += ["Validation loss is the mean cross-entropy (nats per token) over every validation token; "
                  "perplexity is its exponential.", ""]
    if has_plot:
        lines += [f"![training and validation loss against tokens seen]({LOSS_PLOT})", ""]
    return lines


def _usage_section(facts: Mapping) -> list[str]:
    instruct = ((facts.get("config") or {}).get("callbacks") or {}).get("samples", {}).get("instruct")
    if instruct:
        from gpt_lightning.data.template import format_prompt

        prompt = format_prompt("Rewrite the sentence using a simile: The car is very fast.")
    else:
        prompt = "Every effort moves you"
    return ["## Use", "", "```python", "from transformers import pipeline", "",
            'generate = pipeline("text-generation", model="path/to/this/folder")',
            f"print(generate({prompt!r}, max_new_tokens=40)[0][\"generated_text\"])", "```", "",
            "or with gpt_lightning: `python generate.py init=checkpoint init.path=path/to/this/folder"
            + (" instruct=true" if instruct else "") + "`.", ""]


def _provenance_section(facts: Mapping) -> list[str]:
    sessions = facts.get("sessions") or []
    if not sessions:
        return []
    lines = ["## Reproduce", ""]
    for i, s in enumerate(sessions):
        code = s.get("code") or {}
        commit = code.get("commit")
        version = (f"commit `{commit}`" + (" with local changes" if code.get("dirty") else "")) if commit else "no git commit recorded"
        label = "Trained with" if i == 0 else f"Resumed (session {i + 1}) with"
        lines += [f"{label} gpt_lightning {code.get('package')}, {version}, on {s.get('started')}:", "",
                  "```bash", s.get("command") or "(command line not recorded)", "```", ""]
        if s.get("tokens") is not None:
            lines += [f"That session trained {s['tokens']:,} tokens in {s.get('train_time_s')} s "
                      f"({s.get('tokens_per_s')} tokens/s).", ""]
    return lines
