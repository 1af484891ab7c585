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
import json
import sys
from pathlib import Path
from typing import Mapping

import torch

from gpt_lightning.atomic import atomic_write
from gpt_lightning.errors import ConfigError, bad_value, main_guard
from gpt_lightning.weights.hf_io import save_pretrained
from gpt_lightning.model import GPT, GPTConfig
from gpt_lightning.weights.model_card import CARD_FILE, LOSS_PLOT, card_facts, render_card
from gpt_lightning.tokenizer import EOT_ID, EOT_TOKEN, bpe_file

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
                 sampling: Mapping | None = None, key: str = "out") -> Path:
    """Weights, tokenizer, generation config and model card of ``model`` in ``folder``."""
    folder = Path(folder)
    check_target(folder, key)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise bad_value(key, str(folder), f"cannot be created ({err.strerror or err}); choose a writable folder") from None
    save_pretrained(model, folder)
    if model.config.vocab_size > EOT_ID:  # the GPT-2 tokenizer fits
        write_tokenizer_files(folder, model.config.context_length)
        _write_json(folder / "generation_config.json", generation_config(sampling))
    has_plot = bool(history and history.get("train"))
    if has_plot:
        from gpt_lightning.train.callbacks import plot_losses

        plot_losses(history["train"], history.get("val", []), folder / LOSS_PLOT)
    _write_json(folder / FACTS_FILE, facts)
    card = render_card(facts, has_plot=has_plot)
    atomic_write(folder / CARD_FILE, lambda tmp: Path(tmp).write_text(card, encoding="utf-8"))
    return folder


def write_tokenizer_files(folder: Path, context_length: int) -> None:
    """GPT-2's tokenizer as transformers saves it, built offline from tiktoken's cached files."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab, merges = bpe_file("encoder.json"), bpe_file("vocab.bpe")
    for src, name in ((vocab, "vocab.json"), (merges, "merges.txt")):
        data = Path(src).read_bytes()
        atomic_write(folder / name, lambda tmp, data=data: Path(tmp).write_bytes(data))
    tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(EOT_TOKEN, special=True, normalized=False)])
    atomic_write(folder / "tokenizer.json", lambda tmp: tok.save(tmp))
    special = {"content": EOT_TOKEN, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
               "special": True}
    _write_json(folder / "tokenizer_config.json", {
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": {str(EOT_ID): special},
        "bos_token": EOT_TOKEN, "clean_up_tokenization_spaces": False, "eos_token": EOT_TOKEN, "errors": "replace",
        "model_max_length": context_length, "pad_token": None, "tokenizer_class": "GPT2Tokenizer",
        "unk_token": EOT_TOKEN})
    _write_json(folder / "special_tokens_map.json", {"bos_token": EOT_TOKEN, "eos_token": EOT_TOKEN,
                                                     "unk_token": EOT_TOKEN})


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


def _write_json(path: Path, data) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# ---- from a finished run ---------------------------------------------------------------------------
def export_model(trainer, module, folder: Path, extra_results: Mapping | None = None) -> Path | None:
    """Gather the full weights (works under DDP and FSDP), merge LoRA, write the whole folder.

    Every rank must call it (the gather is collective under FSDP); rank 0 writes.
    """
    from gpt_lightning.train.callbacks import LossHistory
    from gpt_lightning.lora import merge_lora_state
    from gpt_lightning.weights.model_card import RunRecord

    state = trainer.strategy.lightning_module_state_dict()
    if not trainer.is_global_zero:
        return None
    weights = {k.removeprefix("model."): v.detach().cpu() for k, v in state.items() if k.startswith("model.")}
    weights = merge_lora_state(weights)  # LoRA updates folded into plain weights
    model = GPT(GPTConfig.from_dict(module.model.config.to_dict()))
    model.load_state_dict(weights)
    record = next((cb for cb in trainer.callbacks if isinstance(cb, RunRecord)), None)
    history = next((cb for cb in trainer.callbacks if isinstance(cb, LossHistory)), None)
    history = history.state_dict() if history is not None else None
    record_state = record.state_dict() if record is not None else None
    facts = card_facts(model_config=model.config.to_dict(), params=model.num_params(), record=record_state,
                       history=history, global_step=trainer.global_step, tokens_seen=module.tokens_seen,
                       epoch=trainer.fit_loop.epoch_progress.current.processed, extra_results=extra_results,
                       source="this run")
    return write_export(model, folder, facts, history, sampling=_sampling(record_state), key="hydra.run.dir")


def _sampling(record: Mapping | None) -> dict:
    return dict((((record or {}).get("config") or {}).get("callbacks") or {}).get("samples") or {})


# ---- from a checkpoint -----------------------------------------------------------------------------
def export_checkpoint(source: str | Path, out: str | Path) -> Path:
    """The export folder for a Lightning ``.ckpt`` of this project, an export / transformers GPT-2
    folder, or a ``.safetensors`` file (what ``init=checkpoint`` takes)."""
    from gpt_lightning.weights.sources import build_model
    from gpt_lightning.weights.model_card import RunRecord

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
        model_cfg = dict((ckpt.get("hyper_parameters") or {}).get("model_config") or {})
        callbacks = ckpt.get("callbacks") or {}
        record = next((v for k, v in callbacks.items() if str(k).startswith(RunRecord.__qualname__)), None)
        history = next((v for k, v in callbacks.items() if str(k).startswith("LossHistory")), None)
        step, tokens, epoch = ckpt.get("global_step"), ckpt.get("tokens_seen"), _epochs_completed(ckpt)
    else:
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
    return write_export(model, out, facts, history, sampling=_sampling(record))


def _epochs_completed(ckpt: dict) -> int | None:
    """Epochs whose batches all ran: the fit loop's processed count (the checkpoint's ``epoch`` is
    the index of the epoch it was written in, one less than that at an epoch's end)."""
    try:
        return int(ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        return ckpt.get("epoch")


def _read_checkpoint(path: Path) -> dict:
    import pickle
    import zipfile

    if not zipfile.is_zipfile(path):
        raise bad_value("source", str(path), "not a Lightning checkpoint (not a torch.save zip archive)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
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
    parser.add_argument("source", help="a .ckpt of train.py/finetune.py, an export folder or a .safetensors file")
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
