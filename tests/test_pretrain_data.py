"""Sliding windows, the memory-mapped token cache, the resumable sampler, bad data."""


import numpy as np
import pytest
import torch

from helpers import data_dir
from gpt_lightning import ConfigError, get_tokenizer
from gpt_lightning.data import token_cache
from gpt_lightning.data.pretrain import PretrainDataModule
from gpt_lightning.data.sampler import ResumableSampler


def _module(tmp_path, **kwargs):
    kwargs.setdefault("cache", str(tmp_path / "tokens"))
    kwargs.setdefault("progress", False)
    return PretrainDataModule(**kwargs)


def test_verdict_windows_counts_strides_and_shifted_targets(tmp_path):
    dm = _module(tmp_path, name="verdict", max_length=64, stride=16, val_fraction=0.1)
    dm.setup()
    ids = get_tokenizer().encode((data_dir() / "the-verdict.txt").read_text(encoding="utf-8"))
    assert dm.num_tokens == len(ids) == 5145
    split = int(5145 * 0.9)
    assert len(dm.train_set) == (split - 64 - 1) // 16 + 1
    assert len(dm.val_set) == (5145 - split - 64 - 1) // 64 + 1  # validation never overlaps
    for i in (0, 1, len(dm.train_set) - 1):
        item = dm.train_set[i]
        start = i * 16
        assert item["input_ids"].tolist() == ids[start:start + 64]
        assert item["targets"].tolist() == ids[start + 1:start + 65]
    first_val = dm.val_set[0]
    assert first_val["input_ids"].tolist() == ids[split:split + 64]
    assert first_val["input_ids"].dtype == torch.long


def test_token_cache_is_reused_and_keyed_by_content(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Every effort moves you. " * 200)
    first = token_cache.tokenize_to_cache([corpus], tmp_path / "cache", progress=False)

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again although nothing changed")

    monkeypatch.setattr(token_cache, "_tokenize_file", no_tokenizing)
    assert token_cache.tokenize_to_cache([corpus], tmp_path / "cache", progress=False) == first
    monkeypatch.undo()
    corpus.write_text("Other words entirely. " * 200)
    second = token_cache.tokenize_to_cache([corpus], tmp_path / "cache", progress=False)
    assert second != first and isinstance(token_cache.load_tokens(second), np.memmap)


def test_streamed_tokenization_equals_whole_file(tmp_path, monkeypatch):
    """Blocks and pieces far smaller than the file give exactly tiktoken's ids of the whole text."""
    monkeypatch.setattr(token_cache, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(token_cache, "PIECE_CHARS", 300)
    text = (data_dir() / "the-verdict.txt").read_text(encoding="utf-8")
    text += "\n\n  indented line\n\ttab\nnaïve café 日本語 🤖\n" * 20
    path = tmp_path / "mixed.txt"
    path.write_text(text, encoding="utf-8")
    cached = token_cache.tokenize_to_cache([path], tmp_path / "cache", progress=False)
    assert token_cache.load_tokens(cached).tolist() == get_tokenizer().encode(text)


def test_folder_and_glob_join_files_with_endoftext(tmp_path):
    books = tmp_path / "books"
    (books / "sub").mkdir(parents=True)
    (books / "a.txt").write_text("first book")
    (books / "sub" / "b.txt").write_text("second book")
    tok = get_tokenizer()
    expected = tok.encode("first book") + [tok.eot_id] + tok.encode("second book")
    for spec in (str(books), str(books / "**" / "*.txt")):
        files = token_cache.expand_paths(spec)
        cached = token_cache.tokenize_to_cache(files, tmp_path / "cache", progress=False)
        assert token_cache.load_tokens(cached).tolist() == expected


def test_text_data_module_reads_windows_without_loading_the_corpus(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("the quick brown fox jumps over the lazy dog\n" * 3000)
    dm = _module(tmp_path, name="text", path=str(path), max_length=128, batch_size=4)
    dm.setup()
    assert isinstance(token_cache.load_tokens(dm.token_file), np.memmap)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 128)
    assert torch.equal(batch["input_ids"][:, 1:], batch["targets"][:, :-1])


@pytest.mark.parametrize("case, message", [
    ("missing", "matches no file"),
    ("empty", "is empty"),
    ("latin1", "is not UTF-8 text (bad byte at offset 3)"),
    ("short", "has 7 tokens"),
])
def test_bad_data_names_the_file(tmp_path, case, message):
    path = tmp_path / f"{case}.txt"
    if case == "empty":
        path.write_text("")
    elif case == "latin1":
        path.write_bytes("café au lait".encode("latin-1"))
    elif case == "short":
        path.write_text("only a few words in this file")
    dm = _module(tmp_path, name="text", path=str(path), max_length=64)
    with pytest.raises(ConfigError) as err:
        dm.setup()
    text = str(err.value)
    assert message in text and "\n" not in text
    if case != "missing":
        assert str(path) in text
    if case == "short":  # 7 tokens leave 1 for validation: no max_length would run, so none is advised
        assert "no window fits" in text and "data.max_length<=" not in text


def test_missing_corpus_offline_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("GPT_LIGHTNING_DATA_DIR", raising=False)
    monkeypatch.setenv("GPT_LIGHTNING_CACHE", str(tmp_path / "empty-cache"))
    from gpt_lightning import download

    monkeypatch.setitem(download.DATASETS, "the-verdict.txt",
                        download.Source("http://127.0.0.1:9/the-verdict.txt", "0" * 64, 20479))
    with pytest.raises(ConfigError, match="GPT_LIGHTNING_DATA_DIR.*data.path="):
        _module(tmp_path, name="verdict").setup()


def test_bad_keys_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.name"):
        _module(tmp_path, name="wikipedia")
    with pytest.raises(ConfigError, match="data.stride=0"):
        _module(tmp_path, stride=0)
    with pytest.raises(ConfigError, match="data.val_fraction"):
        _module(tmp_path, val_fraction=1.5)


def test_sampler_shards_pads_and_resumes():
    full = [list(ResumableSampler(10, shuffle=True, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in full] == [4, 4, 4]  # padded to equal length
    assert set(sum(full, [])) == set(range(10))
    again = ResumableSampler(10, shuffle=True, seed=1, rank=1, world_size=3)
    again.skip(0, 2)
    assert list(again) == full[1][2:]  # resumed mid-epoch
    assert list(again) == full[1]  # the skip applies once
    other_epoch = ResumableSampler(10, shuffle=True, seed=1)
    other_epoch.set_epoch(1)
    assert list(other_epoch) != list(ResumableSampler(10, shuffle=True, seed=1))
    evaluation = [list(ResumableSampler(10, shuffle=False, seed=1, rank=r, world_size=3, pad=False)) for r in range(3)]
    assert sorted(sum(evaluation, [])) == list(range(10))  # every item exactly once


def test_safe_split_points_never_change_the_ids(monkeypatch):
    """Whitespace-heavy random strings, cut into pieces of ~5 characters, tokenize as a whole."""
    import random

    monkeypatch.setattr(token_cache, "PIECE_CHARS", 5)
    tok = get_tokenizer()
    alphabet = ["a", "bc", " ", "  ", "\n", "\n\n", "\t", ".", "'s", "1", "é", "\r\n", " \n", "日"]
    for seed in range(500):
        rng = random.Random(seed)
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
        pieces, tail = token_cache._split_safely(text, final=True)
        assert tail == "" and "".join(pieces) == text
        assert [i for piece in pieces for i in tok.encode(piece)] == tok.encode(text), repr(text)


def test_tokenizing_memory_does_not_grow_with_the_corpus(tmp_path, monkeypatch):
    """Peak Python memory while tokenizing stays flat when the corpus grows 4x (streamed blocks)."""
    import tracemalloc

    monkeypatch.setattr(token_cache, "BLOCK_BYTES", 256 << 10)
    line = "It was a cold grey morning and the painter looked at his canvas again.\n"

    def peak_for(megabytes: int) -> int:
        path = tmp_path / f"corpus{megabytes}.txt"
        with open(path, "w") as fh:
            for i in range(megabytes * (1 << 20) // len(line)):
                fh.write(line if i % 7 else line.upper())
        tracemalloc.start()
        try:
            token_cache.tokenize_to_cache([path], tmp_path / "cache", progress=False)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak_for(2), peak_for(8)
    assert large < 1.5 * small, f"peak grew from {small / 2**20:.1f} to {large / 2**20:.1f} MiB"
    assert large < 8 * (1 << 20) / 2, f"peak {large / 2**20:.1f} MiB for an 8 MiB corpus"


def test_a_rank_without_validation_windows_gets_one_zero_weight_batch(monkeypatch):
    """1 validation window, 3 ranks: ranks 1 and 2 get a copy with every target ignored
    (Lightning refuses a rank with no batch), so the token-weighted loss is unchanged."""
    import types

    from gpt_lightning import GPT, GPTConfig
    from gpt_lightning.train.module import GPTLitModule

    data_dir()
    dm = PretrainDataModule(name="verdict", max_length=128, batch_size=2, val_fraction=0.04, progress=False)
    dm.setup("fit")
    assert len(dm.val_set) == 1
    torch.manual_seed(0)
    module = GPTLitModule(GPT(GPTConfig(vocab_size=50257, context_length=128, n_embd=32, n_layers=1, n_heads=2)),
                          {"lr": 1e-3})
    sums = []
    for rank in range(3):
        monkeypatch.setattr(dm, "trainer", types.SimpleNamespace(global_rank=rank, world_size=3, training=False))
        batches = list(dm.val_dataloader())
        assert len(batches) == 1
        with torch.no_grad():
            sums.append(module.loss_sum(batches[0]))
    assert [int(n) for _, n in sums] == [128, 0, 0] and [float(t) for t, _ in sums[1:]] == [0.0, 0.0]
    assert torch.equal(batches[0]["input_ids"], dm.val_set[0]["input_ids"].unsqueeze(0))
