"""What `python generate.py` does: prompts, streaming, files of prompts, chat.

Every key is described in conf/generate.yaml; the sampling itself is gpt_lightning.generation.
Generated text goes to stdout, everything else (speed, warnings, errors) to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .errors import bad_value
from .generation import StreamDecoder, check_settings, generate, to_inference_layout, trim_at_stop
from .hf_io import load_pretrained
from .init import INITS, build_model, explicit_model_keys, resolve_model_config
from .model import GPT
from .quantize import check_quantize, is_quantized, load_quantized, quantize_model
from .speculative import speculative_generate
from .template import format_prompt
from .tokenizer import Tokenizer, get_tokenizer

SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "num_beams",
                 "length_penalty")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
QUIT = ("/quit", "/exit")


@dataclass
class Job:
    """One completion to produce: which prompt, which sample of it, and its tokens."""

    number: int  # position over prompts x samples; the sampling seed is seed + number
    prompt: str
    sample: int
    ids: list[int]


# ---- settings -------------------------------------------------------------------------------
def sampling_settings(cfg: DictConfig) -> dict:
    settings = {key: cfg[key] for key in SAMPLING_KEYS}
    check_settings(**settings)
    return settings


def stop_strings(cfg: DictConfig) -> list[str]:
    stop = OmegaConf.to_container(cfg.stop) if OmegaConf.is_list(cfg.stop) else cfg.stop
    stop = [stop] if isinstance(stop, str) else stop or []
    if not all(isinstance(s, str) and s for s in stop):
        raise bad_value("stop", stop, 'a list of non-empty strings, e.g. stop=\'["\\n\\n"]\'')
    return stop


def check_counts(cfg: DictConfig) -> None:
    for key in ("batch_size", "num_samples"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise bad_value(key, cfg[key], "an integer >= 1")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise bad_value("seed", cfg.seed, "an integer")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise bad_value("device", name, "auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise bad_value("device", name, "no CUDA GPU is visible here; use device=cpu or device=auto")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if gpu_bf16 else torch.float32
    if name not in DTYPES:
        raise bad_value("dtype", name, f"auto or one of {list(DTYPES)}")
    return DTYPES[name]


def load_model(cfg: DictConfig, device: torch.device, dtype: torch.dtype, tok: Tokenizer,
               init_cfg=None, model_cfg=None, explicit=None) -> GPT:
    """The target model (or, given ``init_cfg``, the draft), quantized if ``cfg.quantize``."""
    torch.manual_seed(cfg.seed)  # init=scratch: the same seed gives the same random weights
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True) if model_cfg is None else model_cfg
    explicit = explicit_model_keys() if explicit is None else explicit
    loader = load_quantized if cfg.quantize == "int8" else load_pretrained  # int8: never the fp32 model
    model = build_model(cfg.init if init_cfg is None else init_cfg, model_cfg, explicit=explicit,
                        load_safetensors=loader)
    if model.config.vocab_size < tok.vocab_size:
        raise bad_value("model.vocab_size", model.config.vocab_size,
                        f"at least {tok.vocab_size} to use the GPT-2 tokenizer")
    if cfg.quantize == "int8":
        return model if is_quantized(model) else quantize_model(model.eval())  # scratch or a .ckpt
    model = model.to(device=device, dtype=dtype).eval()
    return to_inference_layout(model) if device.type == "cpu" else model  # faster CPU GEMMs, same results


# ---- speculative decoding ---------------------------------------------------------------------
def draft_init(cfg: DictConfig) -> dict | None:
    """The draft's init settings, checked against the target before any weights load; None = off."""
    if cfg.draft.init is None:
        if cfg.draft.path:
            raise bad_value("draft.path", cfg.draft.path, "it needs draft.init=checkpoint (or a released name)")
        return None
    allowed = [name for name in INITS if name != "scratch"]
    if cfg.draft.init not in allowed:
        raise bad_value("draft.init", cfg.draft.init, f"null (off) or one of {allowed} (a trained model "
                        "with the target's tokenizer; random weights propose nothing useful)")
    k = cfg.draft.k
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise bad_value("draft.k", k, "an integer >= 1 (tokens proposed per target forward; 4 is typical)")
    if cfg.num_beams > 1:
        raise bad_value("num_beams", cfg.num_beams, "speculative decoding (draft.init) samples or decodes "
                        "greedily; set num_beams=1 or draft.init=null")
    init = {"name": cfg.draft.init, "path": cfg.draft.path}
    target = resolve_model_config(cfg.init, OmegaConf.to_container(cfg.model, resolve=True), explicit_model_keys())
    draft = resolve_model_config(init, {})
    if draft.vocab_size != target.vocab_size:
        raise bad_value("draft.init", cfg.draft.init, f"its vocab_size={draft.vocab_size} differs from the "
                        f"target's {target.vocab_size}; the draft must share the target's tokenizer")
    return init


def pick_generate(draft: GPT | None, k: int):
    """generate(), or speculative decoding with ``draft`` (same keyword arguments)."""
    if draft is None:
        return generate

    def decode(model, prompts, *, num_beams=1, length_penalty=1.0, **kwargs):
        return speculative_generate(model, draft, prompts, k=k, **kwargs)
    return decode


# ---- prompts --------------------------------------------------------------------------------
def read_prompts(cfg: DictConfig) -> list[str]:
    """``prompt``, or every prompt of ``prompt_file`` (plain lines, or JSON Lines with "prompt")."""
    if not cfg.prompt_file:
        return [str(cfg.prompt)]
    path = Path(str(cfg.prompt_file)).expanduser()
    if not path.is_file():
        raise bad_value("prompt_file", str(path), "an existing text or JSON Lines file")
    lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
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


def encode(tok: Tokenizer, text: str) -> list[int]:
    """Token ids of ``text``; an empty prompt starts a new document at <|endoftext|>."""
    return tok.encode(text) or [tok.eot_id]


def make_jobs(prompts: list[str], cfg: DictConfig, tok: Tokenizer) -> list[Job]:
    jobs = []
    for prompt in prompts:
        ids = encode(tok, format_prompt(prompt) if cfg.instruct else prompt)
        for sample in range(cfg.num_samples):
            jobs.append(Job(len(jobs), prompt, sample, ids))
    return jobs


# ---- running -------------------------------------------------------------------------------
def run_batch(model: GPT, tok: Tokenizer, jobs: list[Job], cfg: DictConfig, settings: dict,
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


def complete_prompts(model: GPT, tok: Tokenizer, cfg: DictConfig, settings: dict, stops: list[str],
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


def print_header(job: Job, total: int, cfg: DictConfig) -> None:
    """A separator when there are several completions; the prompt itself unless instruct."""
    if total > 1:
        print(f"\n=== [{job.number + 1}/{total}] prompt {job.number // cfg.num_samples + 1}, "
              f"sample {job.sample + 1} ===")
    if not cfg.instruct:
        print(job.prompt, end="", flush=True)


def print_speed(tokens: int, seconds: float) -> None:
    print(f"[{tokens} tokens in {seconds:.2f} s, {tokens / seconds:.1f} tokens/s]", file=sys.stderr, flush=True)


# ---- chat ----------------------------------------------------------------------------------
def chat_prompt(tok: Tokenizer, history: list[tuple[str, str]], message: str, budget: int) -> list[int]:
    """Past turns (instruction template + reply) and the new message, as tokens, dropping
    the oldest turns until it fits ``budget`` tokens (the newest message always stays)."""
    turns = [encode(tok, format_prompt(user) + reply + "\n\n") for user, reply in history]
    ids = encode(tok, format_prompt(message))
    for turn in reversed(turns):
        if len(turn) + len(ids) > budget:
            break
        ids = turn + ids
    return ids


def chat(model: GPT, tok: Tokenizer, cfg: DictConfig, settings: dict, stops: list[str], generate_fn=generate) -> None:
    """Read a message, answer it, repeat; /quit, /exit or end of input stops."""
    budget = model.config.context_length - settings["max_new_tokens"]
    if budget < 1:
        raise bad_value("max_new_tokens", settings["max_new_tokens"],
                        f"less than model.context_length={model.config.context_length} to leave room for the chat")
    print(f"Chat with the model ({' or '.join(QUIT)} or Ctrl-D to end).", file=sys.stderr, flush=True)
    history: list[tuple[str, str]] = []
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
        job = Job(len(history), message, 0, chat_prompt(tok, history, message, budget))
        texts, counts, seconds = run_batch(model, tok, [job], cfg, settings, stops, cfg.stream, generate_fn)
        if not cfg.stream:
            print(texts[0], flush=True)
        print_speed(counts[0], seconds)
        history.append((message, texts[0].strip()))


def run(cfg: DictConfig) -> None:
    settings = sampling_settings(cfg)  # bad values fail before any weights are loaded
    stops = stop_strings(cfg)
    check_counts(cfg)
    device = pick_device(str(cfg.device))
    dtype = pick_dtype(str(cfg.dtype), device)
    check_quantize(cfg.quantize, device, dtype)
    draft_cfg = draft_init(cfg)
    tok = get_tokenizer()
    model = load_model(cfg, device, dtype, tok)
    draft = None if draft_cfg is None else load_model(cfg, device, dtype, tok, draft_cfg, {}, set())
    generate_fn = pick_generate(draft, cfg.draft.k)
    if cfg.chat:
        chat(model, tok, cfg, settings, stops, generate_fn)
    else:
        complete_prompts(model, tok, cfg, settings, stops, generate_fn)
