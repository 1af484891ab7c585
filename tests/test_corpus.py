"""data=corpus: sources, sharded preparation (parallel, resumable, once), lazy permuted windows,
trainer.tokens_per_step, training from parquet / JSON Lines, the GPT-2 124M recipe and its export."""

from __future__ import annotations

import gzip
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import compose_config, run_job
from gpt_lightning import ConfigError
from gpt_lightning.data import prepare as P
from gpt_lightning.data import sources
from gpt_lightning.data.permutation import FeistelPermutation, PermutedSampler
from gpt_lightning.data.sampler import ResumableSampler
from gpt_lightning.data.shards import TokenStream, read_manifest
from gpt_lightning.config.batch_tokens import accumulation

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
EOT = 50256


def documents(data_dir, n=120, size=2500) -> list[str]:
    """Tiny Shakespeare cut into documents of about ``size`` characters (whole paragraphs)."""
    text = (data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8")
    docs, cur = [], ""
    for para in text.split("\n\n"):
        cur += para + "\n\n"
        if len(cur) > size:
            docs.append(cur)
            cur = ""
            if len(docs) == n:
                break
    return docs


@pytest.fixture(scope="module")
def shared_data():
    from helpers import data_dir

    return data_dir()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data):
    """A folder of one parquet file (several row groups), one .jsonl and one .jsonl.gz; and its documents."""
    docs = documents(shared_data)
    folder = tmp_path_factory.mktemp("corpus")
    pq.write_table(pa.table({"text": docs[:60], "id": list(range(60))}), folder / "a.parquet", row_group_size=7)
    with open(folder / "b.jsonl", "w") as fh:
        for d in docs[60:100]:
            fh.write(json.dumps({"text": d, "url": "x"}) + "\n")
    with gzip.open(folder / "c.jsonl.gz", "wt") as fh:
        for d in docs[100:]:
            fh.write(json.dumps({"text": d}) + "\n")
    return folder, docs


def reference_ids(enc, docs: list[str]) -> np.ndarray:
    """What build-nanogpt writes (encode_ordinary per document), with EOT after each document."""
    return np.array([t for d in docs for t in enc.encode_ordinary(d) + [EOT]], dtype=np.uint16)


def stream_ids(folder: Path, manifest: dict, stream: str = "train") -> np.ndarray:
    s = TokenStream(folder, manifest[stream])
    return s.read(0, len(s)) if len(s) else np.empty(0, np.uint16)


def test_every_format_gives_encode_ordinary_ids_with_eot_after_each_document(corpus, tmp_path, monkeypatch,
                                                                             shared_data, tokenizer):
    folder, docs = corpus
    monkeypatch.setattr(sources, "UNIT_BYTES", 30_000)  # several units per file: cuts must not change ids
    text = folder.parent / "book.txt"
    text.write_text((shared_data / "tinyshakespeare.txt").read_text()[:200_000])
    files = [folder / "a.parquet", folder / "b.jsonl", folder / "c.jsonl.gz", text]
    units = sources.file_units(files, 30_000)
    assert len([u for u in units if u.path == str(text)]) > 3 and len([u for u in units if u.kind == "parquet"]) > 1
    out, manifest = P.prepare(cache=tmp_path, path=[str(f) for f in files], shard_tokens=5_000, val_split="tail",
                              workers=2, progress=False)
    enc = tokenizer._enc
    want = np.concatenate([reference_ids(enc, docs), reference_ids(enc, [text.read_text()])])
    np.testing.assert_array_equal(stream_ids(out, manifest), want)
    shards = manifest["train"]
    assert all(s["tokens"] == 5_000 for s in shards[:-1]) and sum(s["tokens"] for s in shards) == len(want)
    assert sum(s["documents"] for s in shards) == len(docs) + 1 == manifest["totals"]["train_documents"]
    assert [f["sha256"] for f in manifest["source"]["files"]] == [sources.file_sha256(str(f)) for f in files]


def test_held_out_documents_are_whole_and_disjoint(corpus, tmp_path, tokenizer):
    folder, docs = corpus
    out, manifest = P.prepare(cache=tmp_path, path=str(folder), shard_tokens=20_000, val_fraction=0.2, seed=3,
                              progress=False, workers=1)
    enc = tokenizer._enc
    split = lambda ids: [tuple(d) for d in np.split(ids, np.flatnonzero(ids == EOT) + 1) if len(d)]
    train, val = split(stream_ids(out, manifest)), split(stream_ids(out, manifest, "val"))
    every = sorted(tuple(enc.encode_ordinary(d) + [EOT]) for d in docs)
    assert 0 < len(val) < len(docs) // 2 and sorted(train + val) == every  # whole documents, each once
    assert manifest["totals"]["val_documents"] == len(val)


@pytest.mark.parametrize("name,content,fmt", [
    ("data.csv", b"text\nhello\n", "CSV"), ("shard.zst", b"\x28\xb5\x2f\xfd....", "zstd-compressed"),
    ("blob", b"PK\x03\x04rest", "zip archive"), ("weights", b"ab\0cd", r"binary \(it has NUL bytes\)"),
])
def test_unsupported_formats_are_refused_by_name(tmp_path, name, content, fmt):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ConfigError, match=f"is {fmt}, a format data=corpus does not read"):
        sources.list_files(str(tmp_path / name))


def test_a_bad_record_stops_the_pool_with_one_line(tmp_path):
    good = json.dumps({"text": "fine"})
    (tmp_path / "a.jsonl").write_text(good + "\n" + good + "\n")
    (tmp_path / "b.jsonl").write_text(good + "\n" + "{not json\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ConfigError, match=r"b.jsonl is not JSON Lines \(line 2 is not one JSON object\)"):
        P.prepare(cache=tmp_path / "x", path=[str(tmp_path / n) for n in ("a.jsonl", "b.jsonl")], workers=2,
                  progress=False)
    with pytest.raises(ConfigError, match=r"data.text_column='text' is invalid: .*c.jsonl has records without it "
                                          r"\(keys: \['body'\]\)"):
        P.prepare(cache=tmp_path / "x", path=str(tmp_path / "c.jsonl"), workers=1, progress=False)


def test_data_text_refuses_jsonl_and_parquet_instead_of_reading_markup(corpus):
    from gpt_lightning.data.pretrain import PretrainDataModule

    folder, _ = corpus
    for name, kind in (("b.jsonl", "jsonl"), ("a.parquet", "parquet")):
        with pytest.raises(ConfigError, match=f"is {kind}, which data=text would read as plain text; use data=corpus"):
            PretrainDataModule("text", str(folder / name)).prepare_data()


def test_killed_preparation_resumes_keeping_finished_shards(corpus, tmp_path, monkeypatch, tokenizer):
    folder, _ = corpus
    monkeypatch.setattr(sources, "UNIT_BYTES", 40_000)
    kwargs = dict(path=str(folder), shard_tokens=8_000, val_fraction=0.1, progress=False, workers=1)
    _, whole = P.prepare(cache=tmp_path / "whole", **kwargs)
    real, calls = P.tokenize_unit, []

    def dies_after_five(job):
        calls.append(job[0].index)
        if len(calls) > 5:
            raise KeyboardInterrupt  # as a kill would stop it
        return real(job)

    monkeypatch.setattr(P, "tokenize_unit", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        P.prepare(cache=tmp_path / "again", **kwargs)
    target = next((tmp_path / "again" / "corpora").iterdir())
    progress = json.loads((target / "progress.json").read_text())
    kept = {e["file"]: (target / e["file"]).stat().st_mtime_ns for e in progress["train"]["shards"]}
    assert kept and read_manifest(target) is None and not (target / ".lock").exists()
    calls.clear()
    monkeypatch.setattr(P, "tokenize_unit", lambda job: (calls.append(job[0].index), real(job))[1])
    out, manifest = P.prepare(cache=tmp_path / "again", **kwargs)
    assert min(calls) == progress["next_unit"] > 0  # the units already written were not tokenized again
    assert {f: (out / f).stat().st_mtime_ns for f in kept} == kept
    assert manifest["train"] == whole["train"] and manifest["val"] == whole["val"]
    assert not (out / "progress.json").exists()
    np.testing.assert_array_equal(stream_ids(out, manifest), stream_ids(tmp_path / "whole" / "corpora" / whole["key"],
                                                                        whole))


def test_a_start_finds_the_prepared_copy_without_reading_the_corpus(corpus, tmp_path, monkeypatch):
    folder, _ = corpus
    kwargs = dict(path=str(folder), shard_tokens=50_000, progress=False, workers=1)
    P.prepare(cache=tmp_path, **kwargs)

    def no_reading(*args, **kw):
        raise AssertionError("the corpus was read")

    monkeypatch.setattr(sources, "read_unit", no_reading)
    monkeypatch.setattr(P, "file_sha256", no_reading)
    P.prepare(cache=tmp_path, **kwargs)  # stat() and the manifest only
    monkeypatch.undo()
    # the same size and time but other bytes: only data.verify=true notices
    path = folder / "b.jsonl"
    st, original = path.stat(), path.read_bytes()
    data = bytearray(original)
    data[20] = ord("Z") if data[20] != ord("Z") else ord("Y")
    try:
        path.write_bytes(bytes(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        P.prepare(cache=tmp_path, **kwargs)
        with pytest.raises(ConfigError, match="b.jsonl changed since it was prepared"):
            P.prepare(cache=tmp_path, verify=True, **kwargs)
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_second_preparer_waits_for_the_first_instead_of_preparing_again(corpus, tmp_path, monkeypatch):
    folder, _ = corpus
    calls = []
    real = P.tokenize_unit
    monkeypatch.setattr(P, "tokenize_unit", lambda job: (calls.append(job[0].index), real(job))[1])
    kwargs = dict(path=str(folder), shard_tokens=50_000, progress=False, workers=1)
    files = sources.list_files(str(folder))
    settings = P.settings_of("text", 50_000, "documents", 0.01, False, 0)
    target, _ = P.find_prepared(tmp_path, P.identity_of(files, None), settings)
    target.mkdir(parents=True)
    got = {}
    with P.preparer_lock(target, progress=False) as mine:  # another node holds the lock
        assert mine
        other = threading.Thread(target=lambda: got.update(zip(("folder", "manifest"), P.prepare(cache=tmp_path, **kwargs))))
        other.start()
        other.join(1.5)
        assert other.is_alive() and not calls  # waiting, not preparing
        first = P._prepare_locked(target, files, None, P.identity_of(files, None), settings, 1, False)
    other.join(30)
    assert got["manifest"] == first and len(calls) == first["totals"]["units"]  # tokenized once
    (target / ".lock").write_text("a dead node")
    os.utime(target / ".lock", (0, 0))
    with P.preparer_lock(target, progress=False) as mine:  # a stale lock is taken over
        assert mine is False  # ... but the corpus is already prepared


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_lazy_permutation_is_a_seeded_permutation(n):
    perm = FeistelPermutation(n, seed=5)
    order = perm(np.arange(n))
    assert sorted(order.tolist()) == list(range(n))
    np.testing.assert_array_equal(FeistelPermutation(n, seed=5)(np.arange(n)), order)
    if n >= 64:
        assert not np.array_equal(FeistelPermutation(n, seed=6)(np.arange(n)), order)
        assert abs(np.corrcoef(np.arange(n), order)[0, 1]) < 0.2  # shuffled, not near the identity


def test_permuted_sampler_shards_pads_and_resumes_like_the_resumable_sampler():
    n, world = 1003, 4
    ranks = [list(PermutedSampler(n, shuffle=True, seed=1, rank=r, world_size=world)) for r in range(world)]
    assert {len(r) for r in ranks} == {251}
    assert set(sum(ranks, [])) == set(range(n))  # all covered, 1 padding repeat
    again = PermutedSampler(n, shuffle=True, seed=1, rank=2, world_size=world)
    again.skip(0, 100)
    assert list(again) == ranks[2][100:]
    nxt = PermutedSampler(n, shuffle=True, seed=1, rank=2, world_size=world)
    nxt.set_epoch(1)
    assert list(nxt) != ranks[2]
    for pad in (True, False):  # unshuffled (validation): the same items as today's sampler
        for r in range(world):
            a = list(PermutedSampler(5, shuffle=False, seed=0, rank=r, world_size=8, pad=pad))
            b = list(ResumableSampler(5, shuffle=False, seed=0, rank=r, world_size=8, pad=pad))
            assert a == b


def test_windows_cross_shard_boundaries(tmp_path):
    ids = np.arange(1000, dtype=np.uint16)
    entries = []
    for i, (a, b) in enumerate([(0, 300), (300, 310), (310, 1000)]):
        (tmp_path / f"train_{i:06d}.bin").write_bytes(ids[a:b].tobytes())
        entries.append({"file": f"train_{i:06d}.bin", "tokens": b - a, "documents": 0})
    from gpt_lightning.data.corpus import ShardWindows

    windows = ShardWindows(TokenStream(tmp_path, entries), 0, 1000, 32, 32)
    assert len(windows) == 31
    for i in range(len(windows)):
        item = windows[i]
        assert item["input_ids"].tolist() == list(range(32 * i, 32 * i + 32))
        assert item["targets"].tolist() == list(range(32 * i + 1, 32 * i + 33))


def test_tokens_per_step_derives_the_accumulation_or_names_good_values():
    assert accumulation(524_288, 64, 1024, 1) == 8
    assert accumulation(524_288, 16, 1024, 8) == 4
    with pytest.raises(ConfigError, match=r"trainer.tokens_per_step=500000 is invalid: a multiple of .* = 16 x 1024 x 1 "
                                          r"= 16,384 tokens per micro-batch \(e.g. 491,520 or 507,904\)"):
        accumulation(500_000, 16, 1024, 1)


TINY = ["model=gpt2_tiny", "data=corpus", "data.max_length=32", "data.batch_size=4", "data.num_workers=0",
        "data.progress=false", "data.prepare_workers=1", "trainer.enable_progress_bar=false",
        "callbacks.samples.enabled=false", "export=false", "logger=csv"]


def test_a_jsonl_file_trains_with_one_command_and_tokens_per_step(corpus, tmp_path):
    folder, _ = corpus
    result = run_job("train", tmp_path / "run", TINY + [f"data.path={folder / 'b.jsonl'}", "trainer.max_steps=3",
                                                        "data.val_fraction=0.1", "trainer.val_check_interval=6",
                                                        "trainer.tokens_per_step=256", "trainer.limit_val_batches=2"])
    assert result["global_step"] == 3 and result["tokens_seen"] == 3 * 256  # 2 micro-batches of 4 x 32 per step
    assert result["final_val_loss"] is not None


def test_resume_mid_epoch_from_shards_ends_with_the_same_weights(corpus, tmp_path, monkeypatch):
    """Windows drawn across parquet shards: a run killed after step 6 and resumed equals an uninterrupted one."""
    import lightning as L

    from gpt_lightning.train import job as pipeline

    folder, _ = corpus
    common = TINY + [f"data.path={folder / 'a.parquet'}", "data.shard_tokens=3000", "trainer.max_steps=6",
                     "trainer.limit_train_batches=4", "trainer.limit_val_batches=1", "data.val_fraction=0.1",
                     "callbacks.checkpoint.every_n_train_steps=3", "optim.warmup=2"]
    full = run_job("train", tmp_path / "full", common)

    class Crash(Exception):
        pass

    class CrashAfter(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == 4:  # last.ckpt was written at step 3 (epoch 0, batch 3 of 4)
                raise Crash

    build = pipeline.build_callbacks
    monkeypatch.setattr(pipeline, "build_callbacks", lambda c, out, spec: build(c, out, spec) + [CrashAfter()])
    with pytest.raises(Crash):
        run_job("train", tmp_path / "crashed", common)
    monkeypatch.setattr(pipeline, "build_callbacks", build)
    ckpt = tmp_path / "crashed" / "checkpoints" / "last.ckpt"
    resumed = run_job("train", tmp_path / "resumed", common + [f"ckpt_path={ckpt}"])
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 3
    assert a["global_step"] == b["global_step"] == 6
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert full["tokens_seen"] == resumed["tokens_seen"]


def test_a_hub_dataset_streaming_or_not_prepares_the_same_ids_as_the_file(corpus, tmp_path):
    pytest.importorskip("datasets")
    folder, _ = corpus
    jsonl = str(folder / "b.jsonl")
    _, by_file = P.prepare(cache=tmp_path, path=jsonl, val_split="tail", progress=False, workers=1)
    for streaming in (False, True):
        hub = sources.HubSpec("json", None, "train", streaming, jsonl)
        out, manifest = P.prepare(cache=tmp_path, hub=hub, val_split="tail", progress=False, workers=1)
        assert manifest["source"] == {"hub": {"name": "json", "config": None, "split": "train", "streaming": streaming,
                                              "data_files": jsonl, "revision": None}}
        assert manifest["train"] == by_file["train"]
        np.testing.assert_array_equal(stream_ids(out, manifest),
                                      stream_ids(tmp_path / "corpora" / by_file["key"], by_file))


def test_the_fineweb_recipe_at_tiny_shape_trains_and_exports_gpt2s_vocabulary(corpus, tmp_path):
    """experiment=gpt2_124m_fineweb with a tiny model on a local parquet folder: the padded
    vocabulary trains and the export has 50,257 rows with the same logits in transformers."""
    transformers = pytest.importorskip("transformers")
    from gpt_lightning.config.schemas import train_spec
    from gpt_lightning.cli.hydra_adapter import plain

    recipe = plain(compose_config("train", ["experiment=gpt2_124m_fineweb"]))
    assert recipe["model"]["vocab_size"] % 64 == 0 and recipe["trainer"]["tokens_per_step"] == 2 ** 19
    assert (recipe["optim"]["lr"], recipe["optim"]["min_lr"], recipe["optim"]["betas"]) == (6e-4, 6e-5, [0.9, 0.95])
    assert recipe["data"]["hub"] == "HuggingFaceFW/fineweb-edu" and recipe["perf"]["compile"] is True
    assert train_spec(recipe).trainer.tokens_per_step == 524_288
    folder, _ = corpus
    out = tmp_path / "run"
    run_job("train", out, [
        "experiment=gpt2_124m_fineweb", "data.hub=null", f"data.path={folder}", "model.n_layers=2", "model.n_embd=32",
        "model.n_heads=2", "model.context_length=32", "data.max_length=32", "data.batch_size=2", "data.num_workers=0",
        "data.val_fraction=0.2", "data.progress=false", "data.prepare_workers=2", "trainer.tokens_per_step=128",
        "trainer.max_steps=2", "trainer.val_check_interval=null", "trainer.precision=32-true",
        "trainer.enable_progress_bar=false", "perf.compile=false", "callbacks.eval.tasks=[]", "logger=csv",
        "callbacks.samples.max_new_tokens=2", "callbacks.checkpoint.every_n_train_steps=null"])
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2 and ckpt["state_dict"]["model.wte.weight"].shape[0] == 50304
    hf = transformers.GPT2LMHeadModel.from_pretrained(out / "export").eval()
    assert hf.config.vocab_size == 50257 and hf.get_input_embeddings().weight.shape[0] == 50257
    from gpt_lightning import GPT, GPTConfig

    ours = GPT(GPTConfig(**{**ckpt["hyper_parameters"]["model_config"]}))
    ours.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()})
    ours.eval()
    idx = torch.randint(0, 50257, (2, 16))
    with torch.no_grad():
        assert (ours(idx)[..., :50257] - hf(idx).logits).abs().max() < 1e-4


def test_the_prepare_command_prepares_what_train_py_then_finds(corpus, tmp_path):
    """`python prepare.py` with train.py's data keys; a second run finds the copy."""
    import subprocess
    import sys

    from helpers import ROOT

    folder, _ = corpus
    args = [sys.executable, str(ROOT / "prepare.py"), "data=corpus", f"data.path={folder / 'b.jsonl'}",
            f"data.cache={tmp_path / 'cache'}", "data.shard_tokens=10000", "data.progress=false",
            f"hydra.run.dir={tmp_path / 'out'}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    first = subprocess.run(args, cwd=tmp_path, env=env, text=True, capture_output=True, timeout=240)
    assert first.returncode == 0, first.stderr
    line = next(x for x in first.stdout.splitlines() if x.startswith("prepared "))
    assert "training tokens" in line and "in 4 shards" in line
    manifest = read_manifest(Path(line.split()[1].rstrip(":")))
    assert manifest["totals"]["train_documents"] + manifest["totals"]["val_documents"] == 40
