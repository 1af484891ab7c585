"""The catalogue of bad inputs: each stops before anything heavy with one line naming the key.

In-process cases compose the entry point's config exactly as the CLI does and run its checks
(``train_spec`` / generate's schema); a few run the real scripts to check the exit code 2 and
that stderr is a single ``error:`` line, and that a sweep lists a bad job and goes on.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from helpers import compose_config, run_script
from gpt_lightning import ConfigError, GPT, GPTConfig
from gpt_lightning.config.schemas import parse, train_spec
from gpt_lightning.config.generate import GenerateConfig
from gpt_lightning.generate.job import read_prompts
from gpt_lightning.weights.hf_io import save_pretrained
from gpt_lightning.cli.hydra_adapter import plain
from gpt_lightning.weights.sources import build_model

T, F = "train", "finetune"
CASES = [
    # booleans are true/false only
    (T, ["model.qkv_bias=off"], r"model.qkv_bias='off' is invalid: true or false"),
    (T, ["model.bias=yes"], r"model.bias='yes' is invalid: true or false"),
    (T, ["export=no"], r"export='no' is invalid: true or false"),
    (T, ["perf.compile=maybe"], r"perf.compile='maybe' is invalid: true or false"),
    (T, ["data.shuffle=nope"], r"data.shuffle='nope' is invalid: true or false"),
    (T, ["callbacks.samples.enabled=perhaps"], r"callbacks.samples.enabled='perhaps' is invalid: true or false"),
    (F, ["data.mask_prompt=maybe"], r"data.mask_prompt='maybe' is invalid: true or false"),
    (F, ["finetune.responses.enabled=1"], r"finetune.responses.enabled=1 is invalid: true or false"),
    # numbers of the wrong type
    (T, ["seed=1.5"], r"seed=1.5 is invalid: an integer"),
    (T, ["seed=abc"], r"seed='abc' is invalid: an integer"),
    (T, ["model.n_embd=64.5"], r"model.n_embd=64.5 is invalid: an integer"),
    (T, ["ckpt_path=123"], r"ckpt_path=123 is invalid: a string or null"),
    # the trainer
    (T, ["trainer.gradient_clip_val=-1"], r"trainer.gradient_clip_val=-1.0 is invalid: a positive norm"),
    (T, ["trainer.gradient_clip_val=0"], r"trainer.gradient_clip_val=0.0 is invalid"),
    (T, ["trainer.devices=0"], r"trainer.devices=0 is invalid: a number of devices >= 1"),
    (T, ["trainer.devices=-2"], r"trainer.devices=-2 is invalid"),
    (T, ["trainer.devices=abc"], r"trainer.devices='abc' is invalid"),
    (T, ["trainer.precision=bogus"], r"trainer.precision='bogus' is invalid: null .* or one of 32-true"),
    (T, ["trainer.accumulate_grad_batches=0"], r"trainer.accumulate_grad_batches=0 is invalid"),
    (T, ["trainer.accelerator=tpux"], r"trainer.accelerator='tpux' is invalid: one of auto, cpu"),
    (T, ["trainer.max_epochs=0"], r"trainer.max_epochs=0 is invalid"),
    (T, ["trainer.max_steps=0"], r"trainer.max_steps=0 is invalid"),
    (T, ["trainer.log_every_n_steps=0"], r"trainer.log_every_n_steps=0 is invalid"),
    (T, ["trainer.val_check_interval=0"], r"trainer.val_check_interval=0 is invalid"),
    (T, ["trainer.val_check_interval=1.5"], r"trainer.val_check_interval=1.5 is invalid: a fraction"),
    (T, ["trainer.limit_train_batches=0"], r"trainer.limit_train_batches=0 is invalid"),
    (T, ["trainer.num_nodes=0"], r"trainer.num_nodes=0 is invalid"),
    (T, ["trainer.num_sanity_val_steps=-5"], r"trainer.num_sanity_val_steps=-5 is invalid"),
    (T, ["+trainer.bogus_arg=1"], r"trainer.bogus_arg=1 is invalid: not a Trainer argument"),
    (T, ["+trainer.callbacks=1"], r"trainer.callbacks=1 is invalid: not a Trainer argument this project passes on"),
    # strategies
    (T, ["strategy=single", "trainer.devices=2"], r"strategy='single' is invalid: trainer.devices=2 needs"),
    (T, ["strategy=ddp", "strategy.find_unused_parameters=maybe"], r"strategy.find_unused_parameters='maybe'"),
    (T, ["strategy=ddp", "strategy.process_group_backend=mpi"], r"strategy.process_group_backend='mpi' is invalid: one of nccl, gloo"),
    (T, ["strategy.name=bogus"], r"strategy='bogus' is invalid: one of auto, single, ddp, fsdp"),
    (T, ["strategy=ddp", "strategy.timeout_s=0"], r"strategy.timeout_s=0.0 is invalid: a number >= 1"),
    (T, ["run.name=a/b"], r"run.name='a/b' is invalid: a folder name without '/'"),
    (T, ["+run.bogus=1"], r"run.bogus=1 is invalid: not a key of run"),
    # the optimizer
    (T, ["optim.lr=0"], r"optim.lr=0.0 is invalid: a positive number"),
    (T, ["optim.lr=-1"], r"optim.lr=-1.0 is invalid"),
    (T, ["optim.min_lr=1"], r"optim.min_lr=1.0 is invalid: between 0 and optim.lr"),
    (T, ["optim.betas=[0.9]"], r"optim.betas=\[0.9\] is invalid: two numbers"),
    (T, ["optim.betas=[0.9,1.5]"], r"optim.betas=\[0.9, 1.5\] is invalid"),
    (T, ["optim.warmup=-1"], r"optim.warmup=-1 is invalid"),
    (T, ["optim.warmup=1.5"], r"optim.warmup=1.5 is invalid: a step count .* or a fraction"),
    (T, ["optim.weight_decay=-0.1"], r"optim.weight_decay=-0.1 is invalid"),
    (T, ["optim.eps=0"], r"optim.eps=0.0 is invalid"),
    (T, ["+optim.momentum=0.9"], r"optim.momentum=0.9 is invalid: not a optim key; known keys"),
    # callbacks and perf
    (T, ["callbacks.checkpoint.every_n_train_steps=0"], r"callbacks.checkpoint.every_n_train_steps=0 is invalid"),
    (T, ["callbacks.checkpoint.every_n_minutes=-1"], r"callbacks.checkpoint.every_n_minutes=-1.0 is invalid: a number of minutes"),
    (T, ["callbacks.samples.max_new_tokens=0"], r"callbacks.samples.max_new_tokens=0 is invalid"),
    (T, ["callbacks.samples.temperature=-1"], r"callbacks.samples.temperature=-1.0 is invalid"),
    (T, ["callbacks.early_stopping.patience=0"], r"callbacks.early_stopping.patience=0 is invalid"),
    (T, ["perf.mfu_peak_tflops=-5"], r"perf.mfu_peak_tflops=-5.0 is invalid"),
    # the model and init
    (T, ["model.n_heads=5"], r"model.n_heads=5 is invalid: model.n_embd=256 must be divisible by it"),
    (T, ["model.dropout=1.5"], r"model.dropout=1.5 is invalid: a probability"),
    (T, ["model.n_layers=0"], r"model.n_layers=0 is invalid: a positive integer"),
    (T, ["model.context_length=-1"], r"model.context_length=-1 is invalid"),
    (T, ["model.gelu=erf"], r"model.gelu='erf' is invalid: one of \['tanh', 'exact'\]"),
    (T, ["+model.n_layer=3"], r"model.n_layer=3 is invalid: not a model key"),
    (T, ["init.name=gpt3"], r"init='gpt3' is invalid: one of"),
    (T, ["init=checkpoint"], r"init.path=None is invalid: init=checkpoint needs one"),
    (T, ["init.path=/some/weights"], r"init.path='/some/weights' is invalid: init=scratch starts from random weights"),
    # data
    (T, ["data.batch_size=0"], r"data.batch_size=0 is invalid: a positive integer"),
    (T, ["data.stride=0"], r"data.stride=0 is invalid"),
    (T, ["data.val_fraction=1.5"], r"data.val_fraction=1.5 is invalid"),
    (T, ["data.max_length=0"], r"data.max_length=0 is invalid"),
    (T, ["data.name=bogus"], r"data.name='bogus' is invalid"),
    (T, ["data=text"], r"data.path=None is invalid: data=text needs one"),
    (F, ["data.train_fraction=0.9"], r"data.train_fraction=0.9 is invalid: train \+ val \+ test fractions sum to 1.05"),
    (F, ["data.batch_size=0"], r"data.batch_size=0 is invalid"),
    (F, ["data.template.preamble=1"], r"data.template.preamble=1 is invalid: a string"),
    # data=corpus and the batch in tokens
    (T, ["data=corpus"], r"data.path=None is invalid: data=corpus reads either data.path .* or data.hub"),
    (T, ["data=corpus", "data.path=x.jsonl", "data.hub=a/b"], r"data.path='x.jsonl' is invalid: .* exactly one"),
    (T, ["data=corpus", "data.path=x", "data.val_split=random"], r"data.val_split='random' is invalid: one of documents, tail"),
    (T, ["data=corpus", "data.path=x", "data.shard_tokens=0"], r"data.shard_tokens=0 is invalid: a positive integer"),
    (T, ["data=corpus", "data.path=x", "data.prepare_workers=0"], r"data.prepare_workers=0 is invalid: a number of processes"),
    (T, ["trainer.tokens_per_step=1000"], r"trainer.tokens_per_step=1000 is invalid: a multiple of data.batch_size x "
                                          r"data.max_length x ranks = 2 x 256 x 1 = 512 tokens per micro-batch \(e.g. 512 or 1,024\)"),
    (T, ["trainer.tokens_per_step=1024", "trainer.accumulate_grad_batches=4"],
     r"trainer.accumulate_grad_batches=4 is invalid: 1 \(left to trainer.tokens_per_step"),
    (T, ["trainer.tokens_per_step=0"], r"trainer.tokens_per_step=0 is invalid: a number >= 1 or null"),
    # fine-tuning
    (F, ["finetune.lora.rank=-1"], r"finetune.lora.rank=-1 is invalid"),
    (F, ["finetune.lora.targets=[bogus]"], r"finetune.lora.targets=\['bogus'\] is invalid: a non-empty list among"),
    (F, ["finetune.lora.alpha=0"], r"finetune.lora.alpha=0.0 is invalid"),
    (F, ["finetune.responses.max_new_tokens=0"], r"finetune.responses.max_new_tokens=0 is invalid"),
    (F, ["finetune.responses.file=a/b.jsonl"], r"finetune.responses.file='a/b.jsonl' is invalid"),
    # fine-tuning tasks, freezing, DPO (docs/finetuning.md)
    (T, ["data=classification", "data.path=d.csv"], r"data='ClassificationDataModule' is invalid: text for train.py; .* task=classification"),
    (F, ["finetune.trainable_blocks=-1"], r"finetune.trainable_blocks=-1 is invalid: a number >= 0 or null"),
    (F, ["finetune.trainable_blocks=last"], r"finetune.trainable_blocks='last' is invalid: an integer or null"),
    (F, ["finetune.lora.rank=8", "finetune.trainable_blocks=1"], r"finetune.trainable_blocks=1 is invalid: null with LoRA"),
    (F, ["finetune.task=bogus"], r"finetune.task='bogus' is invalid: one of instruct, classification, dpo"),
    (F, ["finetune.task=classification"], r"finetune.task='classification' is invalid: data of its kind .* task=classification"),
    (F, ["finetune.dpo.beta=0"], r"finetune.dpo.beta=0.0 is invalid: a positive number"),
    (F, ["task=dpo"], r"data.path='\?\?\?' is invalid: required"),
    (F, ["task=dpo", "data.path=p.json", "data.val_fraction=1.5"], r"data.val_fraction=1.5 is invalid: a fraction in \(0, 1\)"),
    (F, ["task=classification"], r"data.path=None is invalid: a .csv, .tsv or .jsonl file"),
    (F, ["task=classification", "data.path=d.csv", "data.balance=maybe"], r"data.balance='maybe' is invalid: true or false"),
    (F, ["task=classification", "data.path=d.csv", "data.columns=[label,body]"],
     r"data.text_column='text' is invalid: one of data.columns=\['label', 'body'\]"),
    (F, ["task=classification", "data.path=d.csv", "data.labels=[spam]"], r"data.labels=\['spam'\] is invalid: at least two"),
    (F, ["task=classification", "data.train_path=a.csv"], r"data.val_path=None is invalid: all three of data.train_path"),
    (F, ["task=classification", "data.dataset=imdb"], r"data.dataset='imdb' is invalid: one of \['sms_spam'\]"),
    (F, ["task=classification", "data.path=d.csv", "data.train_fraction=0.9"], r"data.train_fraction=0.9 is invalid: train \+ val \+ test"),
    (F, ["task=classification", "data.path=d.csv", "callbacks.samples.enabled=true"],
     r"callbacks.samples.enabled=True is invalid: false for task=classification"),
    (F, ["task=classification", "data.path=d.csv", "callbacks.eval.tasks=[lambada]"],
     r"callbacks.eval.tasks=\['lambada'\] is invalid: \[\] for task=classification"),
    (F, ["task=classification", "data.path=d.csv", "finetune.responses.enabled=true"],
     r"finetune.responses.enabled=True is invalid: false for task=classification"),
    # the top level
    (T, ["+bogus_top=1"], r"bogus_top=1 is invalid: not a key of this run"),
]


@pytest.mark.parametrize("config, overrides, message", CASES, ids=[" ".join(c[1]) + f" ({c[0]})" for c in CASES])
def test_bad_training_value_is_one_line(config, overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        train_spec(plain(compose_config(config, overrides)))
    assert "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpu_accelerator_without_a_gpu():
    with pytest.raises(ConfigError, match=r"trainer.accelerator='gpu' is invalid: no CUDA GPU is visible here"):
        train_spec(plain(compose_config(T, ["trainer.accelerator=gpu"])))


GENERATE = [
    (["stream=maybe"], r"stream='maybe' is invalid: true or false"),
    (["batch_size=0"], r"batch_size=0 is invalid: an integer >= 1"),
    (["num_samples=0"], r"num_samples=0 is invalid"),
    (["seed=x"], r"seed='x' is invalid: an integer"),
    (['stop=[""]'], r"stop=\[''\] is invalid: a list of non-empty strings"),
    (["+bogus=1"], r"bogus=1 is invalid: not a key of this command"),
    (["max_new_tokens=1.5"], r"max_new_tokens=1.5 is invalid: an integer"),
    (["instruct=nah"], r"instruct='nah' is invalid: true or false"),
]


@pytest.mark.parametrize("overrides, message", GENERATE, ids=[" ".join(c[0]) for c in GENERATE])
def test_bad_generate_value_is_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse(GenerateConfig, plain(compose_config("generate", overrides)), "")


def test_prompt_file_that_is_not_utf8(tmp_path):
    bad = tmp_path / "prompts.txt"
    bad.write_bytes(b"caf\xe9\n")
    cfg = parse(GenerateConfig, plain(compose_config("generate", [f"prompt_file={bad}"])), "")
    with pytest.raises(ConfigError, match=r"prompt_file='.*prompts.txt' is invalid: UTF-8 text \(byte 3 is not\)"):
        read_prompts(cfg)


@pytest.mark.parametrize("text, message", [
    ("{not json", r"config.json is not valid JSON \(line 1, column 2"),
    ("[1, 2]", r"config.json holds a JSON list"),
    ('{"model_type": "gpt2", "n_embd": 32}', r"config.json has no 'vocab_size' key"),
    ('{"model_type": "gpt2", "vocab_size": 97, "n_embd": 32, "n_layer": -1, "n_head": 4}',
     r"config.json: model.n_layers=-1 is invalid"),
])
def test_broken_config_json_names_the_file(tmp_path, text, message):
    folder = save_pretrained(GPT(GPTConfig(vocab_size=97, context_length=16, n_embd=32, n_layers=1, n_heads=4)),
                             tmp_path / "export")
    (folder / "config.json").write_text(text)
    with pytest.raises(ConfigError, match=message):
        build_model({"name": "checkpoint", "path": str(folder)}, {})


def _llmc_header(magic=20240326, version=3, dims=(16, 97, 1, 2, 8, 128)) -> bytes:
    """llm.c's model header: magic, version, maxT, V, L, NH, C, Vp, then zeros to 256 int32."""
    import numpy as np

    header = np.zeros(256, dtype=np.int32)
    header[:8] = [magic, version, *dims]
    return header.tobytes()


def _write_zip_of_notes(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "a zip, but not from torch.save")


PEER_FILES = [  # (file name, how to write it, the one line it gives)
    ("notes.bin", lambda p: p.write_bytes(b"hello, not weights"),
     r"expected an export folder, .*, nanoGPT's ckpt.pt, llm.c's gpt2_124M.bin or an LLMs-from-scratch model.pth"),
    ("weights.pt", lambda p: torch.save({"foo": torch.zeros(1), "bar": 1}, p),
     r"a torch.save file this project does not read \(top level: \['bar', 'foo'\]\); expected nanoGPT"),
    ("archive.pt", _write_zip_of_notes, r"a zip archive that torch.load cannot read"),
    ("dated.pt", lambda p: torch.save({"model": {}, "saved": __import__("datetime").date(2024, 3, 26)}, p),
     r"a pickle with Python objects that a tensors-only load refuses \(.*datetime"),
    ("ckpt.pt", lambda p: torch.save({"model": {"transformer.wte.weight": torch.zeros(97, 8)}, "model_args": {}}, p),
     r"nanoGPT ckpt.pt whose model_args has no n_head"),
    ("gpt2_124M.bin", lambda p: p.write_bytes(_llmc_header() + b"\0" * 16),
     r"llm.c model file of 1,040 bytes, but its header \(L=1, C=8, Vp=128, maxT=16, torch.float32\) "
     r"needs 9,184: truncated"),
    ("gpt2_124M.bin", lambda p: p.write_bytes(_llmc_header(version=4)),
     r"llm.c model file of version 4; this reader knows 3"),
    ("gpt2_124M.bin", lambda p: p.write_bytes(_llmc_header(dims=(16, 97, 1, 3, 8, 128))),
     r"llm.c model file with an impossible header \(maxT=16, V=97, Vp=128, L=1, NH=3, C=8\)"),
    ("gpt2_124M_debug_state.bin", lambda p: p.write_bytes(_llmc_header(magic=20240327)), r"llm.c's debug state"),
    ("review_classifier.pth", lambda p: torch.save({
        "tok_emb.weight": torch.zeros(97, 8), "pos_emb.weight": torch.zeros(16, 8), "trf_blocks.0.norm1.scale": torch.ones(8),
        "out_head.weight": torch.zeros(2, 8), "out_head.bias": torch.zeros(2)}, p),
     r"LLMs-from-scratch GPTModel whose out_head has 2 outputs, not the vocabulary's 97: a classifier"),
]


@pytest.mark.parametrize("name, write, message", PEER_FILES, ids=[m[:30] for _, _, m in PEER_FILES])
def test_checkpoint_file_that_cannot_be_read_is_one_line(tmp_path, name, write, message):
    write(tmp_path / name)
    with pytest.raises(ConfigError, match=f"^init.path='{tmp_path / name}' is invalid: {message}") as err:
        build_model({"name": "checkpoint", "path": str(tmp_path / name)}, {})
    assert "\n" not in str(err.value)


def test_vocabulary_smaller_than_the_tokenizer():
    with pytest.raises(ConfigError, match=r"model.vocab_size=100 is invalid: at least 50,257"):
        build_model({"name": "scratch"}, GPTConfig(vocab_size=100, context_length=16, n_embd=32, n_layers=1,
                                                   n_heads=4), tokenizer_vocab=50257)


def test_advice_for_a_tiny_text_is_a_value_that_runs(tmp_path):
    """A 27-byte file has no window of any length: the advice must not be a value that fails again."""
    from gpt_lightning.data.pretrain import PretrainDataModule

    tiny = tmp_path / "tiny.txt"
    tiny.write_text("A very short text, indeed.\n")
    dm = PretrainDataModule(name="text", path=str(tiny), max_length=64, cache=str(tmp_path / "c"), progress=False)
    with pytest.raises(ConfigError, match=r"no window fits in so little text; give it at least") as err:
        dm.setup()
    assert "data.max_length<=" not in str(err.value)

    longer = tmp_path / "longer.txt"
    longer.write_text("word " * 300)
    dm = PretrainDataModule(name="text", path=str(longer), max_length=256, cache=str(tmp_path / "c"), progress=False)
    with pytest.raises(ConfigError, match=r"use data.max_length<=(\d+)") as err:
        dm.setup()
    fits = int(err.value.args[0].rsplit("data.max_length<=", 1)[1].split()[0])
    PretrainDataModule(name="text", path=str(longer), max_length=fits, cache=str(tmp_path / "c"), progress=False).setup()

    # the advised size counts data.val_fraction: a text of that many tokens then runs
    small_val = dict(name="text", max_length=16, val_fraction=0.05, cache=str(tmp_path / "c"), progress=False)
    with pytest.raises(ConfigError, match=r"give it at least ([\d,]+) tokens") as err:
        PretrainDataModule(path=str(tiny), **small_val).setup()
    least = int(re.search(r"at least ([\d,]+) tokens", str(err.value)).group(1).replace(",", ""))
    enough = tmp_path / "enough.txt"
    enough.write_text("word" + " word" * (least - 1))  # one token each
    PretrainDataModule(path=str(enough), **small_val).setup()


@pytest.mark.parametrize("args, message", [
    (["trainer.gradient_clip_val=-1"], "error: trainer.gradient_clip_val=-1.0 is invalid"),
    (["data.batch_size=0"], "error: data.batch_size=0 is invalid"),
    (["data=text"], "error: data.path=None is invalid"),
])
def test_cli_exit_code_2_and_one_line(tmp_path, args, message):
    proc = run_script("train.py", args + [f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_validation_interval_longer_than_an_epoch(tmp_path):
    """Needs the data: checked when it is set up, before the first training step."""
    from helpers import run_job

    with pytest.raises(ConfigError, match=r"trainer.val_check_interval=50 is invalid: at most the 4 training batches"):
        run_job("train", tmp_path, ["debug=smoke", "trainer.val_check_interval=50", "logger=none",
                                    "trainer.enable_progress_bar=false"])
    assert not list(tmp_path.rglob("*.ckpt"))  # stopped before the first step


def test_sweep_lists_a_bad_job_goes_on_and_exits_1(tmp_path):
    """Job folders are flat for any value (a path here); a failed job makes the sweep exit 1 after
    its summary; a second sweep into the same folder stops at once with exit code 2."""
    from omegaconf import OmegaConf

    from gpt_lightning.cli.hydra_adapter import SweepSummary

    from helpers import SHARED

    verdict_path = tmp_path / "my data" / "verdict.txt"  # a path with a space, as a sweep value
    verdict_path.parent.mkdir()
    verdict_path.write_text((SHARED / "data" / "the-verdict.txt").read_text())
    sweep = tmp_path / "sweep"
    args = ["-m", "debug=smoke", "trainer.enable_progress_bar=false", "logger=none",
            "callbacks.samples.enabled=false", "data=text", f"data.path={verdict_path}", "data.batch_size=0,2",
            f"hydra.sweep.dir={sweep}"]
    proc = run_script("train.py", args, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 1 of 2 jobs failed (0_"), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 2 and all((job / "result.json").is_file() for job in jobs)  # flat: no nested path folders
    assert "data.path-_" in jobs[0].name and "/" not in jobs[0].name
    rows = [row for row in (sweep / "summary.md").read_text().splitlines()[2:] if row.startswith("| ")]
    assert len(rows) == 2
    assert "failed: data.batch_size=0 is invalid" in rows[0] and rows[1].rstrip(" |").endswith("ok")
    ok = json.loads(next(sweep.glob("1_*/result.json")).read_text())
    assert ok["global_step"] == 4
    again = run_script("train.py", args, cwd=tmp_path, timeout=120)
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1].startswith(
        f"error: hydra.sweep.dir='{sweep}' is invalid: it holds the job folders of another sweep"), again.stderr[-3000:]
    # the switch: fail_on_error=false writes the same summary and exits 0
    SweepSummary(fail_on_error=False).on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    with pytest.raises(SystemExit) as exit_:
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert exit_.value.code == 1


# ---- silent wrong results: now refused or made right ----------------------------------------------
def test_tiny_positive_temperatures_sample_the_most_likely_token():
    """logits / 1e-40 overflows float32 (inf - inf = NaN): every tiny temperature acts as greedy."""
    from gpt_lightning.generate.sampling import generate, process_logits, sample

    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 20
    for temperature in (1e-45, 1e-40, 1e-30, 1e-8):
        processed = process_logits(logits, None, temperature=temperature, top_k=5, top_p=0.9)
        assert not processed.isnan().any()
        for u in (0.0, 0.5, 0.999999):
            assert torch.equal(sample(processed, torch.full((3,), u, dtype=torch.float64)), logits.argmax(-1))
    model = GPT(GPTConfig(vocab_size=97, context_length=32, n_embd=32, n_layers=2, n_heads=4)).eval()
    greedy = generate(model, [[1, 2, 3]], max_new_tokens=6, temperature=0.0)
    assert generate(model, [[1, 2, 3]], max_new_tokens=6, temperature=1e-40, seed=1) == greedy
    for bad in (float("inf"), float("nan"), -1e-9):
        with pytest.raises(ConfigError, match=r"temperature=.* is invalid: a number >= 0"):
            generate(model, [[1]], max_new_tokens=1, temperature=bad)


def test_stop_strings_typed_with_backslashes_mean_what_they_say():
    values = plain(compose_config("generate", ['stop=["\\n\\n","a\\tb","c\\\\n"]']))
    assert parse(GenerateConfig, values, "").stop == ["\n\n", "a\tb", "c\\n"]


def test_export_never_replaces_a_users_files(tmp_path):
    from gpt_lightning.weights.export import export_checkpoint

    torch.manual_seed(0)
    source = save_pretrained(GPT(GPTConfig(vocab_size=97, context_length=32, n_embd=32, n_layers=1, n_heads=2)),
                             tmp_path / "source")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes")
    with pytest.raises(ConfigError, match=r"out='.*mine' is invalid: holds files that no export of this project "
                                          r"wrote \(README.md\); give a new or empty folder"):
        export_checkpoint(source, mine)
    assert (mine / "README.md").read_text() == "my notes" and sorted(p.name for p in mine.iterdir()) == ["README.md"]
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ConfigError, match=r"out='.*a_file' is invalid: a file, not a folder"):
        export_checkpoint(source, tmp_path / "a_file")
    first = export_checkpoint(source, tmp_path / "new")  # a new folder, then the same export again into it
    assert export_checkpoint(source, first) == first and (first / "card.json").is_file()


CHECKED_BEFORE_THE_RUN = [
    (["seed=null"], r"^seed=None is invalid: an integer"),  # the key as typed, not run.seed
    (["export=null"], r"^export=None is invalid: true or false"),
    (["data.num_workers=-1"], r"data.num_workers=-1 is invalid: an integer >= 0"),
    (["logger=mlflow", "logger.mlflow.tracking_uri=bogus://x"], r"logger.mlflow.tracking_uri='bogus://x' is invalid: a URI"),
    (["logger=mlflow", "logger.mlflow.tracking_uri=http://127.0.0.1:9"], r"is invalid: no MLflow server answers at 127.0.0.1:9"),
]


@pytest.mark.parametrize("overrides, message", CHECKED_BEFORE_THE_RUN, ids=[" ".join(c[0]) for c in CHECKED_BEFORE_THE_RUN])
def test_values_checked_before_the_run(tmp_path, overrides, message):
    from gpt_lightning.train.job import build_logger

    with pytest.raises(ConfigError, match=message) as err:
        spec = train_spec(plain(compose_config(T, overrides)))
        build_logger(spec, tmp_path)  # the trackers are built before the Trainer starts
    assert "\n" not in str(err.value)


@pytest.mark.skipif(__import__("importlib").util.find_spec("transformer_engine") is not None,
                    reason="transformer_engine is installed here")
def test_precision_that_needs_a_missing_package():
    with pytest.raises(ConfigError, match=r"trainer.precision='transformer-engine' is invalid: needs NVIDIA's "
                                          r"transformer_engine package, which is not installed"):
        train_spec(plain(compose_config(T, ["trainer.precision=transformer-engine"])))


def test_compare_shows_every_run_when_one_has_a_corrupt_file(tmp_path, caplog):
    from gpt_lightning.runs.compare import compare

    for name, result, history in (("good", '{"best_val_loss": 5.5, "overrides": ["a=1"]}', '{"val": [[10, 6.0, 1.0]]}'),
                                  ("cut_result", '{"best_val_loss": 5.', '{"val": [[10, 6.0, 1.0]]}'),
                                  ("cut_history", '{"best_val_loss": 4.25, "overrides": ["a=2"]}', '{"val": [[10')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(result)
        (tmp_path / name / "history.json").write_text(history)
    text, plot = compare([tmp_path], out=tmp_path / "compare.png")
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()[2:]}
    assert set(rows) == {"good", "cut_result", "cut_history"}
    assert "5.5000" in rows["good"] and "4.2500" in rows["cut_history"]
    assert plot is not None and plot.is_file()  # the good run's curve
    assert "cut_result/result.json cannot be read" in caplog.text and "cut_history/history.json cannot be read" in caplog.text


def test_lora_rank_larger_than_the_layer():
    from gpt_lightning.lora import apply_lora

    model = GPT(GPTConfig(vocab_size=97, context_length=32, n_embd=32, n_layers=1, n_heads=2))
    with pytest.raises(ConfigError, match=r"finetune.lora.rank=33 is invalid: at most 32, the smaller side of the "):
        apply_lora(model, 33)
    assert all(p.requires_grad for p in model.parameters())  # refused before anything changed


def test_draft_errors_name_draft_keys_and_a_shorter_context_is_refused(tmp_path):
    from gpt_lightning.generate.job import draft_init

    for name, context in (("target", 64), ("draft", 32)):
        save_pretrained(GPT(GPTConfig(vocab_size=97, context_length=context, n_embd=32, n_layers=1, n_heads=2)),
                        tmp_path / name)

    def config(*draft):
        return parse(GenerateConfig, plain(compose_config("generate", ["init=checkpoint", f"init.path={tmp_path / 'target'}",
                                                                        *draft])), "")

    with pytest.raises(ConfigError, match=r"^draft.path='.*nope' is invalid"):
        draft_init(config("draft.init=checkpoint", f"draft.path={tmp_path / 'nope'}"))
    with pytest.raises(ConfigError, match=r"^draft.init='checkpoint' is invalid: its context_length=32 is shorter "
                                          r"than the target's 64"):
        draft_init(config("draft.init=checkpoint", f"draft.path={tmp_path / 'draft'}"))


def test_callbacks_eval_errors_name_callbacks_eval_keys():
    from gpt_lightning.config.schemas import parse
    from gpt_lightning.config.tasks import EvalConfig

    with pytest.raises(ConfigError, match=r"^callbacks.eval.limit=-1 is invalid: an integer >= 1 or null"):
        parse(EvalConfig, {"tasks": ["hellaswag"], "limit": -1, "every_n_steps": None, "batch_size": 16}, "callbacks.eval")


def test_export_source_errors_name_the_source(tmp_path):
    from gpt_lightning.weights.export import export_checkpoint

    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(ConfigError, match=r"^source='.*bad.safetensors' is invalid") as err:
        export_checkpoint(tmp_path / "bad.safetensors", tmp_path / "out")
    assert "init." not in str(err.value)
