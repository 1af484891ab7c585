"""A complete Hugging Face export folder, from a finished run or from any of our checkpoints.

    config.json, model.safetensors   the weights in GPT-2 layout (hf_io.save_pretrained)
    vocab.json, merges.txt           GPT-2's BPE files (tiktoken's encoder.json and vocab.bpe)
    tokenizer.json                   the same tokenizer for the `tokenizers` library
    tokenizer_config.json, special_tokens_map.json
    generation_config.json           the run's sampling settings (callbacks.samples), eos 50256
    README.md                        the model card (model_card.py), with loss.png
    card.json                        the card's facts as data

transformers' ``AutoTokenizer``, ``AutoModelForCausalLM`` and ``pipeline("text-generation")``
open the folder as it is, offline. From the command line:

    python -m gpt_lightning.weights.export outputs/train/<run>/checkpoints/best-step<N>.ckpt my_export
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Mapping


from gpt_lightning.atomic import atomic_write
from gpt_lightning.config.legacy import load_checkpoint
from gpt_lightning.errors import ConfigError, bad_value, main_guard
from gpt_lightning.weights.hf_io import save_pretrained
from gpt_lightning.model import GPT, GPTConfig
from gpt_lightning.weights.model_card import (CARD_FILE, HISTORY_STATE, LOSS_PLOT, RECORD_STATE, card_facts, plot_losses,
                                             render_card)
from gpt_lightning.tokenizer import EOT_ID
from gpt_lightning.weights.tokenizer_files import write_json, write_tokenizer_files

FACTS_FILE = "card.json"
# Every file write_export may write: a folder holding only these (and card.json) is an earlier
# export that may be replaced; any other file is the user's, and the export refuses the folder.
EXPORT_FILES = frozenset({"config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json",
                          "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                          CARD_FILE, LOSS_PLOT, FACTS_FILE})


def check_target(folder: Path, key: str = "out") -> None:
    """One line unless ``folder`` is new, empty, or an earlier export (it holds card.json and
    only the files an export writes): never replace a user's own files (a README.md, weights)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise bad_value(key, str(folder), "a file, not a folder; give a new or empty folder")
    if not folder.is_dir():
        return
    found = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    others = sorted(found - EXPORT_FILES)
    if found and (FACTS_FILE not in found or others):
        shown = ", ".join((others or sorted(found))[:4])
        raise bad_value(key, str(folder), f"holds files that no export of this project wrote ({shown}); "
                        "give a new or empty folder so none of them is replaced")


# ---- the folder ---------------------------------------------------------------------------------
def write_export(model: GPT, folder: Path, facts: Mapping, history: Mapping | None = None,
                 sampling: Mapping | None = None, chat_template: str | None = None,
                 key: str = "out") -> Path:
    """Weights, tokenizer, generation config and model card of ``model`` in ``folder``; an
    instruction-tuned model's prompt template goes in as ``chat_template`` (data/chat_template.py).

    A vocabulary padded for speed (model.vocab_size=50304, a multiple of 64) is trimmed back to
    the tokenizer's 50,257 rows: the padding rows are never a target, and transformers' users
    expect GPT-2's shape (the logits of the 50,257 real tokens are unchanged).
    """
    folder = Path(folder)
    check_target(folder, key)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise bad_value(key, str(folder), f"cannot be created ({err.strerror or err}); choose a writable folder") from None
    model = trim_vocab(model, EOT_ID + 1)
    save_pretrained(model, folder)
    if model.config.vocab_size > EOT_ID:  # the GPT-2 tokenizer fits
        write_tokenizer_files(folder, model.config.context_length, chat_template)
        write_json(folder / "generation_config.json", generation_config(sampling))
    has_plot = bool(history and history.get("train"))
    if has_plot:
        plot_losses(history["train"], history.get("val", []), folder / LOSS_PLOT)
    write_json(folder / FACTS_FILE, facts)
    card = render_card(facts, has_plot=has_plot)
    atomic_write(folder / CARD_FILE, lambda tmp: Path(tmp).write_text(card, encoding="utf-8"))
    return folder


def trim_vocab(model: GPT, vocab_size: int) -> GPT:
    """``model`` with only the first ``vocab_size`` rows of its token table and output head."""
    if model.config.vocab_size <= vocab_size:
        return model
    config = GPTConfig.from_dict({**model.config.to_dict(), "vocab_size": vocab_size})
    trimmed = GPT(config)
    state = {k: (v[:vocab_size] if k in ("wte.weight", "lm_head.weight") else v) for k, v in model.state_dict().items()}
    trimmed.load_state_dict(state)
    return trimmed.to(next(model.parameters()).dtype)


def generation_config(sampling: Mapping | None) -> dict:
    """transformers' ``generation_config.json`` from the run's sample settings (temperature 0 = greedy)."""
    config = {"bos_token_id": EOT_ID, "eos_token_id": EOT_ID, "pad_token_id": EOT_ID}
    sampling = dict(sampling or {})
    if sampling.get("max_new_tokens"):
        config["max_new_tokens"] = int(sampling["max_new_tokens"])
    temperature = float(sampling.get("temperature") or 0.0)
    config["do_sample"] = temperature > 0
    if temperature > 0:
        config["temperature"] = temperature
        config["top_k"] = int(sampling.get("top_k") or 0)  # 0: off (transformers' default would be 50)
    return config


def sampling(record: Mapping | None) -> dict:
    """The run's ``callbacks.samples`` settings, from its RunRecord state."""
    return dict((((record or {}).get("config") or {}).get("callbacks") or {}).get("samples") or {})


# ---- from a checkpoint -----------------------------------------------------------------------------
def export_checkpoint(source: str | Path, out: str | Path) -> Path:
    """The export folder for a Lightning ``.ckpt`` of this project, an export / transformers GPT-2
    folder, a ``.safetensors`` file, or a nanoGPT, llm.c or LLMs-from-scratch checkpoint (what
    ``init=checkpoint`` takes)."""
    from gpt_lightning.weights.sources import build_model

    source, out = Path(source).expanduser(), Path(out).expanduser()
    if not source.exists():
        raise bad_value("source", str(source), "no such file or folder; give a .ckpt, an export folder or a "
                        ".safetensors file")
    if out.resolve() == (source if source.is_dir() else source.parent).resolve():
        raise bad_value("out", str(out), "a folder other than the one the weights are read from")
    check_target(out)  # before reading any weights
    record = history = None
    step = tokens = epoch = None
    model_cfg: dict = {}
    if source.suffix == ".ckpt":
        ckpt = _read_checkpoint(source)
        if "labels" in ckpt and "model.score.weight" in (ckpt.get("state_dict") or {}):  # finetune.py task=classification
            return _export_classifier_checkpoint(ckpt, out)
        model_cfg = dict((ckpt.get("hyper_parameters") or {}).get("model_config") or {})
        callbacks = ckpt.get("callbacks") or {}  # the run's callbacks' states by state_key
        record, history = callbacks.get(RECORD_STATE), callbacks.get(HISTORY_STATE)
        step, tokens, epoch = ckpt.get("global_step"), ckpt.get("tokens_seen"), _epochs_completed(ckpt)
    elif source.is_dir() or source.suffix == ".safetensors":  # peers' files carry their shapes inside
        from gpt_lightning.weights.hf_io import read_config

        stored = read_config(source)
        model_cfg = stored.to_dict() if stored else {}
    try:
        model = build_model({"name": "checkpoint", "path": str(source)}, model_cfg)
    except ConfigError as err:  # the init group's checks name init.path: here it is SOURCE
        import re

        raise ConfigError(re.sub(r"\binit\.path\b", "source", str(err)).replace(
            "init=checkpoint init.path=", "python -m gpt_lightning.weights.export ")) from None
    facts = card_facts(model_config=model.config.to_dict(), params=model.num_params(), record=record,
                       history=history, global_step=step, tokens_seen=tokens, epoch=epoch, source=str(source))
    return write_export(model, out, facts, history, sampling=sampling(record), chat_template=_chat_template(record))


def _export_classifier_checkpoint(ckpt: dict, out: Path) -> Path:
    from gpt_lightning.classifier import GPTClassifier
    from gpt_lightning.lora import merge_lora_state
    from gpt_lightning.weights.classifier_export import write_classifier_export

    state = merge_lora_state({k.removeprefix("model.").removeprefix("_orig_mod."): v
                              for k, v in ckpt["state_dict"].items() if k.startswith("model.")})
    config = GPTConfig.from_dict(dict(ckpt["hyper_parameters"]["model_config"]))
    model = GPTClassifier(config, len(ckpt["labels"]), ckpt["labels"])
    model.load_state_dict(state)
    return write_classifier_export(model, out)


def _chat_template(record: Mapping | None) -> str | None:
    """The chat template of an instruction-tuned run, from its recorded data config."""
    data = (((record or {}).get("config") or {}).get("data") or {})
    if not str(data.get("_target_", "")).endswith(("InstructDataModule", "PreferenceDataModule")):
        return None
    from gpt_lightning.data.chat_template import chat_template
    from gpt_lightning.data.template import template_from_config

    return chat_template(template_from_config(data.get("template")))


def completed_epochs(processed: int, started: int, last_batch_done: bool) -> int:
    """Epochs whose batches all ran, from the fit loop's counters. The loop counts an epoch as
    processed only after its end-of-epoch hooks (a checkpoint written at the epoch's last
    validation does not count it yet), and counts it all the same when ``trainer.max_steps``
    stopped it part-way."""
    if processed < started:  # inside an epoch: it counts if its last batch ran
        return processed + (1 if last_batch_done else 0)
    return max(0, processed - (0 if last_batch_done else 1))  # after the loop: a part-way epoch does not


def _epochs_completed(ckpt: dict) -> int | None:
    """Epochs whose batches all ran, from the fit loop's state in the checkpoint (its ``epoch``
    is the index of the epoch it was written in)."""
    try:
        loop = ckpt["loops"]["fit_loop"]
        return completed_epochs(int(loop["epoch_progress"]["current"]["processed"]),
                                int(loop["epoch_progress"]["current"]["started"]),
                                bool(loop["epoch_loop.batch_progress"]["is_last_batch"]))
    except (KeyError, TypeError, ValueError):
        return ckpt.get("epoch")


def _read_checkpoint(path: Path) -> dict:
    import pickle
    import zipfile

    if not zipfile.is_zipfile(path):
        raise bad_value("source", str(path), "not a Lightning checkpoint (not a torch.save zip archive)")
    try:
        ckpt = load_checkpoint(path)  # old module paths mapped
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise bad_value("source", str(path), f"cannot be read as a checkpoint ({' '.join(str(err).split())})") from None
    if not isinstance(ckpt, dict):
        raise bad_value("source", str(path), "not a checkpoint of this project")
    return ckpt


# ---- command line ---------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit code 2, like every entry point
        raise ConfigError(f"{message}; usage: python -m gpt_lightning.weights.export SOURCE OUT")


def main(argv: list[str] | None = None) -> Path | None:
    parser = _Parser(prog="python -m gpt_lightning.weights.export",
                     description="Write a Hugging Face folder (weights, tokenizer, generation config, model card) "
                                 "from a checkpoint of this project.")
    parser.add_argument("source", help="a .ckpt of train.py/finetune.py, an export folder, a .safetensors file, "
                                       "or nanoGPT's ckpt.pt, llm.c's .bin, an LLMs-from-scratch .pth")
    parser.add_argument("out", help="the folder to write")

    def run():
        args = parser.parse_args(argv)
        folder = export_checkpoint(args.source, args.out)
        print(f"exported {args.source} to {folder}/ (open it with transformers' pipeline('text-generation', "
              f"model={str(folder)!r}))")
        return folder

    return main_guard(run)


if __name__ == "__main__":
    main(sys.argv[1:])
