"""GPT-2's tokenizer files as transformers saves them (vocab.json, merges.txt, tokenizer.json,
tokenizer_config.json with an optional chat template, special_tokens_map.json), written
offline from tiktoken's cached BPE files: the language-model export (export.py) and the
classifier export (classifier_export.py) both hold them."""

from __future__ import annotations

import json
from pathlib import Path

from gpt_lightning.atomic import atomic_write
from gpt_lightning.tokenizer import EOT_ID, EOT_TOKEN, bpe_file


def write_tokenizer_files(folder: Path, context_length: int, chat_template: str | None = None) -> None:
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
    config = {
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": {str(EOT_ID): special},
        "bos_token": EOT_TOKEN, "clean_up_tokenization_spaces": False, "eos_token": EOT_TOKEN, "errors": "replace",
        "model_max_length": context_length, "pad_token": None, "tokenizer_class": "GPT2Tokenizer",
        "unk_token": EOT_TOKEN}
    if chat_template is not None:
        config["chat_template"] = chat_template
    write_json(folder / "tokenizer_config.json", config)
    write_json(folder / "special_tokens_map.json", {"bos_token": EOT_TOKEN, "eos_token": EOT_TOKEN,
                                                     "unk_token": EOT_TOKEN})


def write_json(path: Path, data) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
