"""The export folder: transformers opens it offline (pipeline, AutoTokenizer), it generates what
generate.py generates, its model card states the data hash and the results, and
`python -m gpt_lightning.weights.export` writes the same folder from a checkpoint."""

import csv
import hashlib
import json
import socket

import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers import compose_config, data_dir, run_job
from gpt_lightning.weights.hf_io import load_pretrained
from gpt_lightning.cli.hydra_adapter import plain
from gpt_lightning import get_tokenizer
from gpt_lightning.weights import export as export_cli
from gpt_lightning.generate import job as generate_app
from gpt_lightning.generate.sampling import generate
from gpt_lightning.weights.model_card import DEFAULT_LICENSE

# two validations (steps 2 and 4), so a curve that lags one validation behind shows
SMOKE = ["debug=smoke", "trainer.enable_progress_bar=false", "logger=csv", "trainer.val_check_interval=2"]
UNICODE = ("Héllo wörld! 日本語のテキスト 🤖🚀 naïve café — «quotes» \n\n  spaces\ttabs<|endoftext|>Ελληνικά "
           "العربية 한국어 ﷽ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 e\u0301 \u200b zero-width, ｆｕｌｌ-width, 1234567890 ")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export_run")
    result = run_job("train", out, SMOKE)
    return out, result


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test: 'offline' is checked, not assumed."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_folder_is_complete(run):
    out, _ = run
    names = {p.name for p in (out / "export").iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "generation_config.json", "README.md", "loss.png"} <= names
    gen = json.loads((out / "export" / "generation_config.json").read_text())
    assert gen["eos_token_id"] == 50256 and gen["do_sample"] is False  # callbacks.samples.temperature=0


def test_pipeline_generates_what_generate_py_generates(run, no_network, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    out, _ = run
    folder = out / "export"
    prompt, n = "Every effort moves you", 12
    pipe = transformers.pipeline("text-generation", model=str(folder), device="cpu")
    hf = pipe(prompt, max_new_tokens=n, do_sample=False, return_tensors=True)[0]["generated_token_ids"]
    tok = get_tokenizer()
    ids = tok.encode(prompt)
    ours = generate(load_pretrained(folder).eval(), [ids], max_new_tokens=n, temperature=0.0, eos_id=tok.eot_id)[0]
    assert list(hf)[len(ids):] == ours

    jsonl = tmp_path / "gen.jsonl"  # generate.py itself, composed in-process
    generate_app.run(plain(compose_config("generate", [
        "init=checkpoint", f"init.path={folder}", f"prompt={prompt}", "temperature=0", f"max_new_tokens={n}",
        "device=cpu", f"output={jsonl}", "stream=false"])))
    completion = json.loads(jsonl.read_text())["completion"]
    assert completion == tok.decode([t for t in list(hf)[len(ids):] if t != tok.eot_id])


def test_auto_tokenizer_gives_our_ids(run, no_network):
    transformers = pytest.importorskip("transformers")
    out, _ = run
    hf = transformers.AutoTokenizer.from_pretrained(str(out / "export"))
    ours = get_tokenizer()
    assert hf(UNICODE)["input_ids"] == ours.encode(UNICODE)
    assert hf.decode(ours.encode(UNICODE)) == UNICODE
    assert hf.eos_token_id == 50256 and hf.model_max_length == 128


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_card_names_data_hash_and_results(run):
    out, result = run
    card = (out / "export" / "README.md").read_text()
    # the token cache's content hash: sha256 of the tokenizer id, the file's bytes and a separator
    verdict = (data_dir() / "the-verdict.txt").read_bytes()
    digest = hashlib.sha256(b"tiktoken-gpt2" + verdict + b"\0file\0").hexdigest()[:24]
    assert f"`{digest}`" in card and "5,145" in card  # hash and token count of The Verdict
    assert f"{result['best_val_loss']:.4f}" in card and f"{result['final_val_loss']:.4f}" in card
    front = _front_matter(card)
    assert front["license"] == DEFAULT_LICENSE and front["pipeline_tag"] == "text-generation"
    metrics = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert metrics["loss"] == pytest.approx(result["best_val_loss"], abs=1e-4)
    assert "python train.py debug=smoke" in card  # the command line


def test_history_matches_logged_validation_losses(run):
    out, result = run
    rows = list(csv.DictReader(open(out / "csv" / "metrics.csv")))
    logged = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    history = json.loads((out / "history.json").read_text())["val"]
    assert len(logged) == 2 and [v for _, v, _ in history] == pytest.approx(logged, rel=1e-6)
    assert [t for t, _, _ in history] == [2 * 2 * 64, 4 * 2 * 64]  # tokens at steps 2 and 4


def test_export_cli_from_checkpoint_writes_the_same_folder(run, tmp_path):
    out, result = run
    folder = export_cli.main([str(out / "checkpoints" / "last.ckpt"), str(tmp_path / "again")])
    a, b = load_file(out / "export" / "model.safetensors"), load_file(folder / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("config.json", "tokenizer.json", "vocab.json", "merges.txt", "generation_config.json"):
        assert (folder / name).read_bytes() == (out / "export" / name).read_bytes(), name
    card = (folder / "README.md").read_text()
    assert f"{result['best_val_loss']:.4f}" in card and _front_matter(card)["license"] == DEFAULT_LICENSE


def test_export_cli_bad_source_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_cli.main([str(tmp_path / "missing.ckpt"), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: source=") and err.count("\n") == 1


def test_license_default_is_the_yaml_default():
    from helpers import ROOT

    from gpt_lightning.config.schemas import CardConfig

    assert yaml.safe_load((ROOT / "conf" / "base.yaml").read_text())["card"]["license"] == DEFAULT_LICENSE
    assert CardConfig().license == DEFAULT_LICENSE
