"""Classifier exports: a Hugging Face ``GPT2ForSequenceClassification`` folder, and back.

The folder is the language-model export's (config.json, model.safetensors, tokenizer files)
with what transformers' sequence classification reads: ``architectures:
["GPT2ForSequenceClassification"]``, ``id2label``/``label2id`` (the label names of the data),
``pad_token_id`` 50256 (transformers finds each row's last token that is not padding) and the
head as ``score.weight``. ``transformers.pipeline("text-classification", model=folder)`` opens
it offline and answers with the label names; :func:`load_classifier` reads it (or any such
GPT-2 folder) back into a :class:`~gpt_lightning.classifier.GPTClassifier`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from safetensors.torch import load_file, save_file

from gpt_lightning.atomic import atomic_write
from gpt_lightning.classifier import GPTClassifier
from gpt_lightning.errors import ConfigError
from gpt_lightning.tokenizer import EOT_ID
from gpt_lightning.weights.hf_io import _config_file, _resolve, config_to_hf, hf_to_ours, ours_to_hf

ARCHITECTURE = "GPT2ForSequenceClassification"


def write_classifier_export(model: GPTClassifier, folder: Path, results: Mapping | None = None,
                            chat_template: str | None = None) -> Path:
    """Weights, config, tokenizer and a short model card of ``model`` in ``folder``."""
    from gpt_lightning.weights.tokenizer_files import write_tokenizer_files

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = ours_to_hf(model)
    tensors.pop("lm_head.weight", None)  # a classifier has no LM head
    tensors["score.weight"] = model.score.weight.detach().cpu().float().contiguous()
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    config = config_to_hf(model.config)
    config.update(architectures=[ARCHITECTURE], pad_token_id=EOT_ID, tie_word_embeddings=True,
                  id2label={str(i): name for i, name in enumerate(model.labels)},
                  label2id={name: i for i, name in enumerate(model.labels)}, problem_type="single_label_classification")
    _write(folder / "config.json", json.dumps(config, indent=2) + "\n")
    write_tokenizer_files(folder, model.config.context_length)
    _write(folder / "README.md", _card(model, results or {}))
    return folder


def _card(model: GPTClassifier, results: Mapping) -> str:
    lines = ["---", "library_name: transformers", "pipeline_tag: text-classification", "tags: [gpt2, gpt_lightning]",
             "---", "", "# GPT-2 text classifier", "",
             f"A GPT-2 ({model.config.n_layers} blocks, {model.config.n_embd} wide) with a classification head on the "
             "last token, fine-tuned with gpt_lightning (`finetune.py task=classification`).", "",
             "Labels: " + ", ".join(f"`{name}`" for name in model.labels), ""]
    splits = results.get("classification") or {}
    if splits:
        lines += ["| split | loss | accuracy | macro-F1 |", "|---|---|---|---|"]
        lines += [f"| {s} | {m['loss']:.4f} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} |" for s, m in splits.items()]
        lines.append("")
    lines += ["```python", "from transformers import pipeline", "",
              'classify = pipeline("text-classification", model="path/to/this/folder")',
              'print(classify("You won a prize! Call now"))', "```", ""]
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def load_classifier(path: str | Path) -> GPTClassifier:
    """A GPT-2 sequence-classification folder (``score.weight`` + ``id2label``) as a GPTClassifier."""
    weights, cfg_file = _resolve(path)
    if cfg_file is None:
        raise ConfigError(f"no config.json beside {weights}; a classifier export needs its config (labels)")
    hf = json.loads(cfg_file.read_text(encoding="utf-8"))
    config = _config_file(cfg_file, weights)
    state = load_file(str(weights))
    score = state.pop("score.weight", None)
    if score is None:
        raise ConfigError(f"{weights} holds no score.weight: not a sequence-classification export "
                          "(export one with `finetune.py task=classification`)")
    id2label = hf.get("id2label") or {str(i): f"LABEL_{i}" for i in range(score.shape[0])}
    labels = [id2label[str(i)] for i in range(score.shape[0])]
    model = GPTClassifier(config, score.shape[0], labels)
    ours = hf_to_ours(state, config)
    ours["score.weight"] = score
    model.load_state_dict(ours, strict=not config.tie_embeddings)
    return model
