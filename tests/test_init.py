"""The init config group: scratch, released weights over HTTP, and local checkpoints.

The released-weights tests run a real HTTP server on 127.0.0.1 laid out like the hub's
``<repo>/resolve/<revision>/<file>`` URLs, serving a small GPT-2 written by transformers.
"""

import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gpt_lightning.weights.hf_io import save_pretrained
from gpt_lightning import GPT, ConfigError, GPTConfig
from gpt_lightning.config.schemas import INITS
from gpt_lightning.weights.sources import HUB_WEIGHTS, build_model

from fake_hub import REPO, REVISION, WEIGHTS_URL, SMALL, closed_port_url as _closed_port_url, max_logit_diff as _max_logit_diff, openai_124m as _openai_124m

ROOT = Path(__file__).resolve().parents[1]


# ---- released weights over HTTP ----------------------------------------------------------------
def test_download_verifies_caches_and_matches_transformers(hub):
    model = _openai_124m(dropout=0.1)
    assert _max_logit_diff(model, hub.hf) <= 1e-4
    # the weights decided the shape; dropout stayed the caller's
    assert (model.config.n_layers, model.config.n_embd, model.config.vocab_size) == (2, 32, 97)
    assert model.config.dropout == 0.1
    assert sorted(p.name for p in hub.cache.iterdir() if not p.name.endswith(".lock")) == [
        "config.json", "model.safetensors"]
    assert [path for path, _ in hub.requests] == [f"/{REPO}/resolve/{REVISION}/config.json", WEIGHTS_URL]

    again = _openai_124m()
    assert len(hub.requests) == 2  # nothing fetched the second time
    assert _max_logit_diff(again, hub.hf) <= 1e-4


def test_offline_with_nothing_cached_says_where_to_put_the_files(hub, monkeypatch):
    monkeypatch.setenv("GPT_LIGHTNING_HF_ENDPOINT", _closed_port_url())
    with pytest.raises(ConfigError) as err:
        _openai_124m()
    message = str(err.value)
    assert "\n" not in message
    for needed in ("init=openai_124m", REPO, "GPT_LIGHTNING_WEIGHTS_DIR", "init.path=", "GPT_LIGHTNING_HF_ENDPOINT"):
        assert needed in message
    assert not (hub.cache / "model.safetensors").exists()


def test_weights_dir_serves_offline_and_is_verified(hub, tmp_path, monkeypatch):
    local = tmp_path / "weights" / REPO
    shutil.copytree(hub.folder, local)
    monkeypatch.setenv("GPT_LIGHTNING_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("GPT_LIGHTNING_HF_ENDPOINT", _closed_port_url())
    assert _max_logit_diff(_openai_124m(), hub.hf) <= 1e-4

    data = bytearray((local / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (local / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="GPT_LIGHTNING_WEIGHTS_DIR"):
        _openai_124m()


def test_openai_init_from_local_path_checks_the_architecture(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("GPT_LIGHTNING_HF_ENDPOINT", _closed_port_url())
    init = {"name": "openai_124m", "path": str(hub.folder / "model.safetensors")}
    assert _max_logit_diff(build_model(init, SMALL), hub.hf) <= 1e-4

    other = GPT(GPTConfig(vocab_size=97, context_length=48, n_embd=32, n_layers=3, n_heads=4))
    folder = save_pretrained(other, tmp_path / "other")
    with pytest.raises(ConfigError, match=r"n_layers=3 \(not 2\), so it is not init=openai_124m"):
        build_model({"name": "openai_124m", "path": str(folder)}, SMALL)


# ---- architecture: explicit keys, silent replacement, dropout -------------------------------------
def test_explicit_key_that_disagrees_with_the_weights_fails():
    init = {"name": "openai_355m", "path": None}
    with pytest.raises(ConfigError) as err:
        build_model(init, SMALL, explicit={"n_layers"})  # fails before any download
    assert str(err.value) == ("model.n_layers=12 conflicts with init=openai_355m, whose weights have "
                              "n_layers=24; drop the override or choose another init")
    with pytest.raises(ConfigError, match="model.n_embd=768 and model.n_heads=12 conflict .* "
                                          "n_embd=1024, n_heads=16; drop the overrides"):
        build_model(init, SMALL, explicit=["n_embd", "n_heads", "dropout"])


def test_non_explicit_keys_are_replaced_and_dropout_is_kept(hub):
    stored = HUB_WEIGHTS["openai_124m"].config  # the fake hub's tiny model
    model = build_model({"name": "openai_124m", "path": None}, {**SMALL, "n_layers": 7, "dropout": 0.1},
                        explicit={"dropout"})
    assert model.config == replace(stored, dropout=0.1)
    assert build_model(OmegaConf.create({"name": "openai_124m", "path": None}), OmegaConf.create(SMALL)).config == stored


# ---- init=checkpoint ---------------------------------------------------------------------------------
@pytest.fixture
def trained(tiny_config):
    """A tiny GPT with non-zero biases, so a wrong mapping cannot hide."""
    torch.manual_seed(0)
    model = GPT(tiny_config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.05)
    return model


def _assert_same_weights(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def _checkpoint(path, **model):
    return build_model({"name": "checkpoint", "path": str(path)}, {**SMALL, **model})


def test_checkpoint_from_export_folder(trained, tmp_path):
    folder = save_pretrained(trained, tmp_path / "export")
    model = _checkpoint(folder, dropout=0.2)
    _assert_same_weights(model, trained)
    assert model.config == replace(trained.config, dropout=0.2)
    with pytest.raises(ConfigError, match=r"model.n_layers=12 conflicts with init=checkpoint \(.*export\), "
                                          "whose weights have n_layers=2"):
        build_model({"name": "checkpoint", "path": str(folder)}, SMALL, explicit={"n_layers"})


def test_checkpoint_from_hf_folder_and_safetensors_file(hf_tiny_folder):
    folder, hf = hf_tiny_folder
    assert _max_logit_diff(_checkpoint(folder), hf) <= 1e-4
    assert _max_logit_diff(_checkpoint(folder / "model.safetensors"), hf) <= 1e-4


@pytest.mark.parametrize("prefix", ["model.", "model._orig_mod."])
def test_checkpoint_from_lightning_ckpt(trained, tmp_path, prefix):
    state = {prefix + k: v for k, v in trained.state_dict().items()}  # lm_head.weight included, tied
    state["loss_weights"] = torch.ones(3)  # other module state is not the model's
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 1, "global_step": 10, "state_dict": state, "optimizer_states": [],
                "hyper_parameters": {"model_config": trained.config.to_dict(), "lr": 3e-4}}, path)
    model = _checkpoint(path, dropout=0.1)
    _assert_same_weights(model, trained)
    assert model.lm_head.weight is model.wte.weight
    assert model.config == replace(trained.config, dropout=0.1)


def test_lightning_ckpt_whose_weights_do_not_fit_its_config(trained, tmp_path):
    state = {"model." + k: v for k, v in trained.state_dict().items()}
    for name, model_config in {"deeper": {"n_layers": 3}, "wider": {"n_embd": 64}}.items():
        path = tmp_path / f"{name}.ckpt"
        config = {**trained.config.to_dict(), **model_config}
        torch.save({"state_dict": state, "hyper_parameters": {"model_config": config}}, path)
        with pytest.raises(ConfigError, match=f"init.path='{path}' is invalid: its weights do not fit"):
            _checkpoint(path)


def test_checkpoint_path_mistakes_name_init_path(trained, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with zipfile.ZipFile(tmp_path / "other.ckpt", "w") as archive:
        archive.writestr("notes.txt", "a zip, but not from torch.save")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    cases = {
        tmp_path / "missing": "no such file or folder",
        tmp_path / "empty": "no model.safetensors in it",
        tmp_path / "notes.txt": "expected an export folder",
        tmp_path / "broken.ckpt": "not a Lightning checkpoint",
        tmp_path / "other.ckpt": "cannot be read as a Lightning checkpoint",
        tmp_path / "foreign.ckpt": "not a checkpoint of this project",
    }
    for path, reason in cases.items():
        with pytest.raises(ConfigError, match=f"init.path='{path}' is invalid: {reason}"):
            _checkpoint(path)
    with pytest.raises(ConfigError, match="init.path=None is invalid: init=checkpoint needs one"):
        build_model({"name": "checkpoint", "path": None}, SMALL)


# ---- scratch and config mistakes ------------------------------------------------------------------
def test_scratch_builds_the_model_config(tiny_config):
    torch.manual_seed(0)
    model = build_model(OmegaConf.create({"name": "scratch", "path": None}),
                        OmegaConf.create({"name": "gpt2_tiny", **tiny_config.to_dict()}), explicit={"n_layers"})
    assert model.config == tiny_config


def test_init_and_model_mistakes_are_one_line_config_errors(tiny_config):
    model = tiny_config.to_dict()
    with pytest.raises(ConfigError, match="init='gpt3' is invalid: one of"):
        build_model({"name": "gpt3", "path": None}, model)
    with pytest.raises(ConfigError, match=r"init.revison='main' is invalid: not a init key; known keys: name, path"):
        build_model({"name": "scratch", "path": None, "revison": "main"}, model)
    with pytest.raises(ConfigError, match="init=scratch starts from random weights"):
        build_model({"name": "scratch", "path": "/some/weights"}, model)
    with pytest.raises(ConfigError, match=r"unknown model keys \['n_layer'\]"):
        build_model({"name": "scratch", "path": None}, {**model, "n_layer": 3})


def test_init_yaml_files_match_the_code():
    files = sorted((ROOT / "conf" / "init").glob("*.yaml"))
    assert sorted(f.stem for f in files) == sorted(INITS)
    for file in files:
        cfg = OmegaConf.load(file)
        assert dict(cfg) == {"_target_": "gpt_lightning.config.schemas.InitConfig", "name": file.stem, "path": None}, file
        for line in file.read_text().splitlines():
            assert line.startswith("#") or "  # " in line, f"{file.name}: key without a comment: {line}"
