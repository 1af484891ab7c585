"""finetune.py task=classification: data, the last-token head against transformers, freezing,
and the book's recipe end to end (tiny GPT-2 as init=openai_124m, the SMS Spam Collection's
format served from 127.0.0.1), the export in transformers' pipeline, evaluate.py on it."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections import Counter

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fake_hub import serve_as_openai_124m
from helpers import compose_config, run_job
from gpt_lightning import ConfigError, GPT, GPTConfig
from gpt_lightning.classifier import GPTClassifier
from gpt_lightning.data.classification import ClassificationDataModule, balance_classes
from gpt_lightning.download import Source, sha256_of
from gpt_lightning.train.freeze import count_trainable, freeze_blocks
from gpt_lightning.evaluate.classification_metrics import confusion_matrix, scores

SPAM = ["WINNER!! You have won a free prize, call 0800 now", "URGENT: claim your cash reward, text WIN to 8000",
        "Free entry: win a holiday, reply YES"]
HAM = ["see you at lunch tomorrow?", "ok, I'll call you later", "thanks, got it", "are we still on for dinner"]


# ---- data --------------------------------------------------------------------------------------
def test_files_columns_balance_split_and_truncation(tmp_path, tokenizer):
    rows = [("spam" if i % 4 == 0 else "ham", f"message {i} " + "word " * (i % 7)) for i in range(40)]
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(f'"{t}, quoted",{lab}\n' for lab, t in rows))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"body": t, "y": lab}) + "\n" for lab, t in rows))
    with open(tmp_path / "d.tsv", "w", newline="") as fh:  # the SMS Spam Collection's layout: no header
        csv.writer(fh, delimiter="\t", lineterminator="\n").writerows(rows)
    variants = [dict(path=str(tmp_path / "d.csv")), dict(path=str(tmp_path / "d.tsv"), columns=["label", "text"]),
                dict(path=str(tmp_path / "d.jsonl"), text_column="body", label_column="y")]
    for kwargs in variants:
        dm = ClassificationDataModule(**kwargs, max_length=4, balance=True, seed=1)
        dm.setup()
        assert dm.labels == ["ham", "spam"]
        quoted = kwargs["path"].endswith(".csv")  # a quoted CSV field keeps its comma
        assert all(t.endswith(", quoted") == quoted for part in dm.splits.values() for t, _ in part)
        sizes = {split: len(part) for split, part in dm.splits.items()}
        assert sizes == {"train": 14, "val": 2, "test": 4}  # 10 spam + 10 ham, 70/10/20
        everything = [label for part in dm.splits.values() for _, label in part]
        assert Counter(everything) == {"ham": 10, "spam": 10}
        assert dm.num_truncated == sum(len(tokenizer.encode(t)) > 4 for part in dm.splits.values() for t, _ in part) > 0
        batch = next(iter(dm.split_loader("train")))
        assert batch["input_ids"].shape[1] <= 4 and batch["labels"].dtype == torch.long
        assert batch["attention_mask"].sum(1).tolist() == [min(len(tokenizer.encode(t)), 4) for t, _ in dm.splits["train"][:8]]
    with pytest.raises(ConfigError, match=r"data.text_column='text' is invalid: a column of .*d.jsonl"):
        ClassificationDataModule(path=str(tmp_path / "d.jsonl")).setup()
    given = ClassificationDataModule(train_path=str(tmp_path / "d.csv"), val_path=str(tmp_path / "d.csv"),
                                     test_path=str(tmp_path / "d.csv"), labels=["spam", "ham"])
    given.setup()
    assert given.labels == ["spam", "ham"] and len(given.splits["val"]) == 40
    kept = balance_classes([(str(i), "a" if i < 30 else "b") for i in range(40)], seed=0)
    assert Counter(lab for _, lab in kept) == {"a": 10, "b": 10}


def test_accuracy_and_macro_f1_from_the_confusion_matrix():
    logits = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [2.0, 0, 0], [0, 0, 2.0], [0, 2.0, 0]])
    labels = torch.tensor([0, 1, 1, 2, -100])
    m = confusion_matrix(logits, labels, 3)
    assert m.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    f1 = [2 / 3, 2 / 3, 1.0]  # class 0: P 1/2 R 1; class 1: P 1 R 1/2; class 2: 1
    assert scores(m) == pytest.approx({"accuracy": 3 / 4, "macro_f1": sum(f1) / 3})


# ---- the model ---------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["right", "left"])
def test_logits_equal_gpt2_for_sequence_classification(side, tmp_path, one_thread):
    transformers = pytest.importorskip("transformers")
    from gpt_lightning.weights.classifier_export import load_classifier

    torch.manual_seed(0)
    pad = 0
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=24, vocab_size=97, pad_token_id=pad,
                                  num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
    hf = transformers.GPT2ForSequenceClassification(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = load_classifier(tmp_path / "hf").eval()
    assert ours.labels == ["a", "b", "c"]
    lengths = [5, 11, 8]
    texts = [torch.randint(1, 97, (n,), generator=torch.Generator().manual_seed(n)) for n in lengths]
    ids = torch.full((3, 11), pad)
    mask = torch.zeros((3, 11), dtype=torch.long)
    for row, t in enumerate(texts):
        where = slice(0, len(t)) if side == "right" else slice(11 - len(t), 11)
        ids[row, where], mask[row, where] = t, 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # transformers counts from 0 only if told, as we do
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask, position_ids=positions).logits
        mine = ours(ids, attention_mask=mask)
        alone = torch.cat([ours(t.unsqueeze(0)) for t in texts])
    assert (mine - theirs).abs().max() < 1e-4
    assert (mine - alone).abs().max() < 1e-4  # padding changes nothing


def test_trainable_blocks_freeze_all_but_the_last_blocks_ln_f_and_head():
    gpt = GPT(GPTConfig(vocab_size=97, context_length=16, n_embd=32, n_layers=3, n_heads=4))
    model = freeze_blocks(GPTClassifier.from_gpt(gpt, 2), 1)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {n for n, _ in model.named_parameters() if n.startswith(("blocks.2.", "ln_f.", "score."))}
    block = sum(p.numel() for p in model.blocks[2].parameters())
    assert count_trainable(model) == (block + 2 * 32 + 2 * 32, model.num_params())  # score: 2 x 32
    lm = freeze_blocks(GPT(gpt.config), 0)  # the LM head is tied: the token table trains with it
    assert {n for n, p in lm.named_parameters() if p.requires_grad} == {"wte.weight", "ln_f.weight", "ln_f.bias"}
    with pytest.raises(ConfigError, match=r"finetune.trainable_blocks=4 is invalid: at most the model's 3 blocks"):
        freeze_blocks(GPT(gpt.config), 4)


# ---- the book's recipe, end to end ---------------------------------------------------------------
def sms_zip(rows) -> bytes:
    text = "".join(f"{label}\t{message}\n" for label, message in rows)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("SMSSpamCollection", text)
        zf.writestr("readme", "SMS Spam Collection v.1 (a test copy)")
    return buffer.getvalue()


def test_sms_spam_recipe_end_to_end(tmp_path, monkeypatch, one_thread):
    transformers = pytest.importorskip("transformers")
    from gpt_lightning.data import sms_spam
    from gpt_lightning.evaluate.job import run as evaluate

    torch.manual_seed(0)
    tiny = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64))
    tiny.save_pretrained(tmp_path / "tiny")
    rows = [("spam", f"{SPAM[i % 3]} #{i}") for i in range(10)] + [("ham", f"{HAM[i % 4]} {i}") for i in range(30)]
    with serve_as_openai_124m(tmp_path / "tiny", tmp_path, monkeypatch) as hub:
        (tmp_path / "hub" / "uci").mkdir()
        archive = tmp_path / "hub" / "uci" / "sms+spam+collection.zip"
        archive.write_bytes(sms_zip(rows))
        monkeypatch.setitem(sms_spam.DATASETS, "sms_spam", ("sms_spam_collection.zip", Source(
            f"{hub.url}/uci/sms+spam+collection.zip", sha256_of(archive))))
        out = tmp_path / "run"
        overrides = ["experiment=sms_spam_124m", "trainer.max_epochs=2", "data.batch_size=4",
                     "trainer.enable_progress_bar=false", "optim.lr=1e-3"]
        assert compose_config("finetune", overrides).finetune.trainable_blocks == 1
        result = run_job("finetune", out, overrides)
        assert any(path == "/uci/sms+spam+collection.zip" for path, _ in hub.requests)

    # balanced 10/10, split 70/10/20; metrics of every split; the test confusion matrix
    assert {s: m["count"] for s, m in result["classification"].items()} == {"train": 14, "val": 2, "test": 4}
    assert set(result["classification"]["test"]) == {"loss", "accuracy", "macro_f1", "count"}
    assert result["labels"] == ["ham", "spam"] and result["truncated"] == 0
    confusion = json.loads((out / "confusion_matrix.json").read_text())
    assert sum(map(sum, confusion["test"])) == 4
    assert confusion["test"][0][0] + confusion["test"][1][1] == round(4 * result["classification"]["test"]["accuracy"])
    # only the last block, the final LayerNorm and the head trained
    block = 12 * 32 * 32 + 13 * 32
    assert result["trainable_params"] == block + 2 * 32 + 2 * 32
    assert result["best_val_accuracy"] is not None and "best-step" in result["best_checkpoint"]
    acc = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    for tag in ("val/loss", "val/accuracy", "val/macro_f1", "final/test/accuracy", "final/train/macro_f1",
                "params/trainable"):
        assert acc.Scalars(tag), tag
    assert "test/confusion_matrix" in acc.Tags()["images"]

    # the export: transformers' pipeline, offline, with the label names; the first block kept its weights
    export = out / "export"
    classify = transformers.pipeline("text-classification", model=str(export), device="cpu")
    texts = [message for _, message in rows]
    from gpt_lightning.weights.classifier_export import load_classifier
    from gpt_lightning.data.classification import ClassificationCollator, Example, encode_texts

    ours = load_classifier(export).eval()
    batch = ClassificationCollator()([Example(ids, 0) for ids in encode_texts(texts)])
    with torch.no_grad():  # one right-padded batch: the last real token of each text
        probs = ours(batch["input_ids"], attention_mask=batch["attention_mask"]).softmax(-1)
    for answer, p in zip(classify(texts[::5], top_k=None), probs[::5]):
        assert {a["label"]: a["score"] for a in answer} == pytest.approx({"ham": float(p[0]), "spam": float(p[1])}, abs=1e-5)
    before = tiny.transformer.h[0].mlp.c_fc.weight
    after = transformers.GPT2ForSequenceClassification.from_pretrained(export).transformer.h[0].mlp.c_fc.weight
    assert torch.equal(before, after)

    # the best checkpoint (by val/accuracy) exports as a classifier too
    from gpt_lightning.weights.export import main as export_main

    export_main([result["best_checkpoint"], str(tmp_path / "best_export")])
    assert load_classifier(tmp_path / "best_export").labels == ["ham", "spam"]

    # evaluate.py task=classification scores a labelled file with the export
    (tmp_path / "labelled.jsonl").write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for lab, t in rows))
    from gpt_lightning.cli.hydra_adapter import plain

    summary = evaluate(plain(compose_config("evaluate", ["task=classification", "init=checkpoint", f"init.path={export}",
                                                         f"classification.path={tmp_path / 'labelled.jsonl'}",
                                                         "progress=false"])), tmp_path / "eval")
    expected = sum(int(p.argmax()) == (lab == "spam") for p, (lab, _) in zip(probs, rows)) / len(rows)
    assert {r["metric"]: r["value"] for r in summary}["accuracy"] == pytest.approx(expected)
    with pytest.raises(ConfigError, match=r"classification.path=None is invalid"):
        evaluate(plain(compose_config("evaluate", ["task=classification", "init=checkpoint", f"init.path={export}"])),
                 tmp_path / "eval2")
