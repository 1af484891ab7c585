"""What `python generate.py` does: prompts, streaming, files of prompts, chat.

Every key is described in conf/generate.yaml; the sampling itself is gpt_lightning.generate.sampling.
Generated text goes to stdout, everything else (speed, warnings, errors) to stderr.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from gpt_lightning.config.schemas import parse
from gpt_lightning.errors import ConfigError, bad_value
from gpt_lightning.generate.sampling import (StreamDecoder, check_settings, generate, trim_at_stop)
from gpt_lightning.config.generate import GenerateConfig
from gpt_lightning.config.schemas import INITS, InitConfig
from gpt_lightning.weights.sources import planned_config
from gpt_lightning.model import GPT
from gpt_lightning.quantize import check_quantize, int8_draft
from gpt_lightning.generate.speculative import speculative_generate
from gpt_lightning.data.template import format_prompt
from gpt_lightning.tokenizer import Tokenizer, get_tokenizer
from gpt_lightning.generate.loading import load_model, pick_device, pick_dtype
from gpt_lightning.generate.prompts import chat_prompt, encode

SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "num_beams",
                 "length_penalty")
QUIT = ("/quit", "/exit")


@dataclass
class Job:
    """One completion to produce: which prompt, which sample of it, and its tokens."""

    number: int  # position over prompts x samples; the sampling seed is seed + number
    prompt: str
    sample: int
    ids: list[int]


# ---- settings -------------------------------------------------------------------------------
def sampling_settings(cfg: GenerateConfig) -> dict:
    settings = {key: getattr(cfg, key) for key in SAMPLING_KEYS}
    check_settings(**settings)
    return settings


# ---- speculative decoding ---------------------------------------------------------------------
SELF_DRAFT = "int8"  # draft.init value: the target's own int8 copy proposes (self-speculative decoding)


def draft_init(cfg: GenerateConfig, explicit: Iterable[str] = (), device: torch.device | None = None,
               dtype: torch.dtype | None = None) -> InitConfig | None:
    """The draft's init settings, checked against the target before any weights load; None = off
    (and for draft.init=int8, whose draft is made from the target once it is loaded)."""
    d = cfg.draft
    if d.init is None:
        if d.path:
            raise bad_value("draft.path", d.path, "it needs draft.init=checkpoint (or a released name)")
        return None
    allowed = [SELF_DRAFT] + [name for name in INITS if name != "scratch"]
    if d.init not in allowed:
        raise bad_value("draft.init", d.init, f"null (off) or one of {allowed} (int8: the target's own int8 "
                        "copy; else a trained model with the target's tokenizer)")
    if cfg.num_beams > 1:
        raise bad_value("num_beams", cfg.num_beams, "speculative decoding (draft.init) samples or decodes "
                        "greedily; set num_beams=1 or draft.init=null")
    if d.init == SELF_DRAFT:
        check_self_draft(cfg.quantize, d.path, device, dtype)
        return None
    target = planned_config(cfg.init, cfg.model, explicit)
    try:
        init = InitConfig(d.init, d.path)
        draft = planned_config(init, {})
    except ConfigError as err:  # the init group's checks name init.*: the user typed draft.*
        raise ConfigError(_as_draft_keys(str(err))) from None
    if draft.vocab_size != target.vocab_size:
        raise bad_value("draft.init", d.init, f"its vocab_size={draft.vocab_size} differs from the "
                        f"target's {target.vocab_size}; the draft must share the target's tokenizer")
    if draft.context_length < target.context_length:
        raise bad_value("draft.init", d.init, f"its context_length={draft.context_length} is shorter than the "
                        f"target's {target.context_length}, so every completion would stop at "
                        f"{draft.context_length} tokens; use a draft with the target's context, or draft.init=null")
    return init


def check_self_draft(quantize, path, device: torch.device | None, dtype: torch.dtype | None) -> None:
    """One-line ConfigError unless the int8 copy of the target can draft for it."""
    if path:
        raise bad_value("draft.path", path, "draft.init=int8 drafts with the target's own weights; set draft.path=null")
    if quantize is not None:
        raise bad_value("draft.init", SELF_DRAFT, "the target is int8 already (quantize=int8); the int8 draft "
                        "speeds up a float32 target: drop quantize=int8, or set draft.init=null")
    if device is not None and device.type != "cpu":
        raise bad_value("draft.init", SELF_DRAFT, f"the int8 draft runs on CPUs (device={device}); "
                        "use device=cpu, or a smaller released model as the draft on GPUs")
    if dtype is not None and dtype != torch.float32:
        raise bad_value("draft.init", SELF_DRAFT, f"the int8 draft verifies with a float32 target "
                        f"(dtype={str(dtype)[6:]}); use dtype=float32 or dtype=auto")


def _as_draft_keys(message: str) -> str:
    """An init-group error about the draft, with the keys the user typed (draft.path, draft.init)."""
    return re.sub(r"\binit\.path\b", "draft.path", re.sub(r"\binit(\.name)?(?=[=' ])", "draft.init", message))


def pick_generate(draft: GPT | None, k: int):
    """generate(), or speculative decoding with ``draft`` (same keyword arguments)."""
    if draft is None:
        return generate

    def decode(model, prompts, *, num_beams=1, length_penalty=1.0, **kwargs):
        return speculative_generate(model, draft, prompts, k=k, **kwargs)
    return decode


# ---- prompts --------------------------------------------------------------------------------
def read_prompts(cfg: GenerateConfig) -> list[str]:
    """``prompt``, or every prompt of ``prompt_file`` (plain lines, or JSON Lines with "prompt")."""
    if not cfg.prompt_file:
        return [str(cfg.prompt)]
    path = Path(str(cfg.prompt_file)).expanduser()
    if not path.is_file():
        raise bad_value("prompt_file", str(path), "an existing text or JSON Lines file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise bad_value("prompt_file", str(path), f"UTF-8 text (byte {err.start} is not); save it as UTF-8") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if path.suffix in (".jsonl", ".json"):
        prompts = [_json_prompt(path, n, line) for n, line in lines]
    else:
        prompts = [line for _, line in lines]
    if not prompts:
        raise bad_value("prompt_file", str(path), "at least one non-empty line")
    return prompts


def _json_prompt(path: Path, n: int, line: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise bad_value("prompt_file", f"{path}:{n}", f"one JSON object per line ({err.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        raise bad_value("prompt_file", f"{path}:{n}", 'a JSON object with a "prompt" string')
    return record["prompt"]


def make_jobs(prompts: list[str], cfg: GenerateConfig, tok: Tokenizer) -> list[Job]:
    jobs = []
    for prompt in prompts:
        ids = encode(tok, format_prompt(prompt) if cfg.instruct else prompt)
        for sample in range(cfg.num_samples):
            jobs.append(Job(len(jobs), prompt, sample, ids))
    return jobs


# ---- running -------------------------------------------------------------------------------
def run_batch(model: GPT, tok: Tokenizer, jobs: list[Job], cfg: GenerateConfig, settings: dict,
              stops: list[str], stream: bool, generate_fn=generate) -> tuple[list[str], list[int], float]:
    """Completions of ``jobs`` generated together: (texts, new-token counts, seconds).

    With ``stream`` (one job) the text is printed as it is produced, cut before any stop string.
    """
    printer = StreamDecoder(tok.decode_bytes, skip_ids={tok.eot_id}, stop_strings=stops) if stream else None
    on_token = (lambda _row, t: print(printer.push(t), end="", flush=True)) if printer else None
    start = time.perf_counter()
    outs = generate_fn(model, [j.ids for j in jobs], **settings, eos_id=tok.eot_id, stop_sequences=stops,
                       decode=tok.decode, seed=[cfg.seed + j.number for j in jobs], on_token=on_token)
    seconds = time.perf_counter() - start
    if printer:
        print(printer.finish(), flush=True)
    texts = [trim_at_stop(tok.decode([t for t in out if t != tok.eot_id]), stops) for out in outs]
    return texts, [len(out) - (out[-1:] == [tok.eot_id]) for out in outs], seconds


def complete_prompts(model: GPT, tok: Tokenizer, cfg: GenerateConfig, settings: dict, stops: list[str],
                     generate_fn=generate) -> None:
    """Every prompt x sample, ``batch_size`` at a time, printed and written to ``output``."""
    jobs = make_jobs(read_prompts(cfg), cfg, tok)
    out_file = open_output(cfg.output)
    try:
        for first in range(0, len(jobs), cfg.batch_size):
            batch = jobs[first:first + cfg.batch_size]
            stream = cfg.stream and len(batch) == 1
            if stream:
                print_header(batch[0], len(jobs), cfg)
            texts, counts, seconds = run_batch(model, tok, batch, cfg, settings, stops, stream, generate_fn)
            for job, text, count in zip(batch, texts, counts):
                if not stream:
                    print_header(job, len(jobs), cfg)
                    print(text, flush=True)
                if out_file:
                    out_file.write(json.dumps({"prompt": job.prompt, "sample": job.sample, "completion": text,
                                               "new_tokens": count, "tokens_per_s": round(count / seconds, 2)},
                                              ensure_ascii=False) + "\n")
                    out_file.flush()
            print_speed(sum(counts), seconds)
    finally:
        if out_file:
            out_file.close()


def open_output(path):
    if not path:
        return None
    path = Path(str(path)).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "w", encoding="utf-8")
    except OSError as err:
        raise bad_value("output", str(path), f"a writable file path ({err.strerror})") from None


def print_header(job: Job, total: int, cfg: GenerateConfig) -> None:
    """A separator when there are several completions; the prompt itself unless instruct."""
    if total > 1:
        print(f"\n=== [{job.number + 1}/{total}] prompt {job.number // cfg.num_samples + 1}, "
              f"sample {job.sample + 1} ===")
    if not cfg.instruct:
        print(job.prompt, end="", flush=True)


def print_speed(tokens: int, seconds: float) -> None:
    print(f"[{tokens} tokens in {seconds:.2f} s, {tokens / seconds:.1f} tokens/s]", file=sys.stderr, flush=True)


# ---- chat ----------------------------------------------------------------------------------
def chat(model: GPT, tok: Tokenizer, cfg: GenerateConfig, settings: dict, stops: list[str],
         generate_fn=generate) -> None:
    """Read a message, answer it, repeat; /quit, /exit or end of input stops."""
    budget = model.config.context_length - settings["max_new_tokens"]
    if budget < 1:
        raise bad_value("max_new_tokens", settings["max_new_tokens"],
                        f"less than model.context_length={model.config.context_length} to leave room for the chat")
    print(f"Chat with the model ({' or '.join(QUIT)} or Ctrl-D to end).", file=sys.stderr, flush=True)
    history: list[tuple[str, str]] = []
    from gpt_lightning.data.chat_template import declared_chat_template

    template = declared_chat_template(cfg.init.path if cfg.init.name == "checkpoint" else None)  # the export's own
    while True:
        try:
            message = input("> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return
        if message in QUIT:
            return
        if not message:
            continue
        job = Job(len(history), message, 0, chat_prompt(tok, history, message, budget, chat_template=template))
        texts, counts, seconds = run_batch(model, tok, [job], cfg, settings, stops, cfg.stream, generate_fn)
        if not cfg.stream:
            print(texts[0], flush=True)
        print_speed(counts[0], seconds)
        history.append((message, texts[0].strip()))


def run(values: dict, explicit: Iterable[str] = ()) -> None:
    """generate.py: ``values`` is the composed conf/generate.yaml as plain dicts."""
    cfg = parse(GenerateConfig, values, "")  # bad values fail before any weights are loaded
    settings = sampling_settings(cfg)
    stops = cfg.stop
    if cfg.prompt_file:
        read_prompts(cfg)  # a bad file fails before the weights are loaded too
    device = pick_device(str(cfg.device))
    dtype = pick_dtype(str(cfg.dtype), device)
    check_quantize(cfg.quantize, device, dtype)
    draft = draft_init(cfg, explicit, device, dtype)  # checked against the target before any weights load
    tok = get_tokenizer()
    model = load_model(cfg, device, dtype, tok, explicit)
    if cfg.draft.init == SELF_DRAFT:
        draft_model = int8_draft(model)  # shares the embeddings; the target stays float32
    else:
        draft_model = None if draft is None else load_model(cfg, device, dtype, tok, (), draft, {})
    generate_fn = pick_generate(draft_model, cfg.draft.k)
    if cfg.chat:
        chat(model, tok, cfg, settings, stops, generate_fn)
    else:
        complete_prompts(model, tok, cfg, settings, stops, generate_fn)
