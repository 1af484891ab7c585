"""finetune.py: a tiny init served over loopback HTTP, tuned on a slice of the 1,100 records."""

from gpt_lightning.weights.hf_io import load_pretrained
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import ROOT, compose_config, data_dir, run_job
from fake_hub import serve_as_openai_124m


@pytest.fixture
def tiny_gpt2_hub(tmp_path, monkeypatch):
    """A random GPT-2 with the real vocabulary, published as init=openai_124m."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=256))
    hf.save_pretrained(tmp_path / "tiny")
    with serve_as_openai_124m(tmp_path / "tiny", tmp_path, monkeypatch) as server:
        yield server


def test_finetune_from_downloaded_init_learns_responses(tiny_gpt2_hub, tmp_path, monkeypatch):
    records = json.loads((data_dir() / "instruction-data.json").read_text())[:200]
    path = tmp_path / "slice.json"
    path.write_text(json.dumps(records))
    out = tmp_path / "run"
    overrides = [
        "init=openai_124m", f"data.path={path}", "data.batch_size=4", "trainer.max_steps=20",
        "trainer.val_check_interval=10", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
        "optim.lr=2e-3", "optim.warmup=3", "callbacks.samples.max_new_tokens=5", "finetune.responses.max_new_tokens=12",
        "data.template.preamble=", "data.template.response_header=Answer:"]
    from gpt_lightning.generate import sampling as generation
    from gpt_lightning.train import job as pipeline  # noqa: F401 (imported first: responses keep the real generate)

    prompts = []  # what the samples after each validation feed the model (a spy: the real generate runs)
    real_generate = generation.generate
    monkeypatch.setattr(generation, "generate", lambda model, p, **kw: prompts.append(p) or real_generate(model, p, **kw))
    result = run_job("finetune", out, overrides)
    monkeypatch.setattr(generation, "generate", real_generate)

    assert tiny_gpt2_hub.weight_requests(), "the init came over HTTP"
    acc = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    train = [e.value for e in acc.Scalars("train/loss")]
    assert sum(train[-5:]) / 5 < sum(train[:5]) / 5 - 1.0  # response-token loss falls
    val = [e.value for e in acc.Scalars("val/loss")]
    assert len(val) == 2 and val[1] < val[0]

    lines = (out / "responses.jsonl").read_text().splitlines()
    assert len(lines) == 10  # 5% of 200 records
    row = json.loads(lines[0])
    assert set(row) == {"instruction", "input", "output", "response"}
    assert result["responses"] == 10
    assert (out / "export" / "model.safetensors").is_file()
    assert any("responses" in t for t in acc.Tags()["tensors"])

    # The samples after each validation use data.template.*, the template trained on: the
    # last one (step 20, the final weights) is what the export answers in that template.
    from gpt_lightning import get_tokenizer
    from gpt_lightning.train.callbacks import SampleText
    from gpt_lightning.data.template import template_from_config

    cfg = compose_config("finetune", overrides)
    template = template_from_config(cfg.data.template)
    expected = template.format_prompt(cfg.callbacks.samples.prompt)
    assert expected.startswith("### Instruction:") and expected.endswith("Answer:\n")
    assert [get_tokenizer().decode(p[0]) for p in prompts] == [expected, expected]  # two validations
    sampler = SampleText(prompt=cfg.callbacks.samples.prompt, max_new_tokens=5, instruct=True)
    ours = sampler.sample(load_pretrained(out / "export"), template)
    last = (out / "samples.txt").read_text().splitlines()[-1]
    assert last.startswith("[step 20,") and last.endswith((cfg.callbacks.samples.prompt + ours).replace("\n", " "))


def test_conflicting_model_override_fails_before_any_download(tmp_path):
    import subprocess
    import sys


    env = {**__import__("os").environ, "GPT_LIGHTNING_HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens
    proc = subprocess.run([sys.executable, str(ROOT / "finetune.py"), "init=openai_355m", "model.n_layers=12",
                           f"hydra.run.dir={tmp_path}/run"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: model.n_layers=12 conflicts with init=openai_355m")
