import os
import shutil
from pathlib import Path

import pytest

from helpers import data_dir
from gpt_lightning import ConfigError, get_tokenizer
from gpt_lightning.tokenizer import _load_gpt2_encoding

ODD = [
    "Hello, world!",
    "  leading and   multiple   spaces\t\ttabs\n\nnewlines  ",
    "naïve café — “quotes” 日本語のテキスト 🤖🚀 emoji",
    "numbers 1234567 3.14159 and contractions: don't, we'll, I'm",
    "text<|endoftext|>more text",
    "<|endoftext|>",
    "",
]


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    cache = Path(os.environ.get("TIKTOKEN_CACHE_DIR", ""))
    vocab, merges = cache / "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6", cache / "6d1cbeee0f20b3d9449abfede4726ed8212e3aee"
    if not (vocab.is_file() and merges.is_file()):
        pytest.skip("GPT-2 BPE files not in TIKTOKEN_CACHE_DIR")
    folder = tmp_path_factory.mktemp("bpe")
    shutil.copy(vocab, folder / "vocab.json")  # the names transformers' GPT-2 tokenizer reads
    shutil.copy(merges, folder / "merges.txt")
    return transformers.GPT2Tokenizer.from_pretrained(folder)


@pytest.mark.parametrize("text", ODD)
def test_ids_match_transformers_on_odd_strings(hf_tokenizer, text):
    tok = get_tokenizer()
    ids = tok.encode(text)
    assert ids == hf_tokenizer.encode(text)
    assert tok.decode(ids) == text


def test_ids_match_transformers_on_the_verdict(hf_tokenizer):
    text = (data_dir() / "the-verdict.txt").read_text(encoding="utf-8")
    ids = get_tokenizer().encode(text)
    assert len(ids) == 5145  # as stated in ../shared/README.md
    assert ids == hf_tokenizer.encode(text)


def test_endoftext_is_one_special_token():
    tok = get_tokenizer()
    assert tok.eot_id == 50256 and tok.vocab_size == 50257
    assert tok.encode("a<|endoftext|>b").count(50256) == 1


def test_offline_without_cache_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    import tiktoken.load
    import tiktoken.registry

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(tiktoken.load, "read_file", offline)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    with pytest.raises(ConfigError) as err:
        _load_gpt2_encoding()
    assert "TIKTOKEN_CACHE_DIR" in str(err.value) and "vocab.bpe" in str(err.value)
