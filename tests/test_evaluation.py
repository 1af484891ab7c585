"""evaluate.py's tasks against the same formulas computed on transformers' GPT2LMHeadModel
(one sequence at a time, the plain way), on a tiny random model with the real vocabulary."""

import json
import re
import math

import pytest
import torch

from helpers import compose_config, run_script
from gpt_lightning.weights.hf_io import load_pretrained
from gpt_lightning.cli.hydra_adapter import plain
from eval_fixtures import HELLASWAG, LAMBADA, write_hellaswag, write_lambada, write_responses, write_text
from gpt_lightning import ConfigError
from gpt_lightning.evaluate import hellaswag
from gpt_lightning.evaluate import lambada
from gpt_lightning.evaluate.perplexity import Perplexity, windows
from gpt_lightning.evaluate.scoring import score_pairs
from gpt_lightning.evaluate.tasks import evaluate

CONTEXT = 64


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer):
    """(folder, ours, transformers) with the same random weights; context 64."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=CONTEXT))
    with torch.no_grad():  # non-zero biases, larger weights: sharper, less uniform predictions
        for name, p in hf.named_parameters():
            p.mul_(4.0) if p.dim() > 1 else p.normal_(0, 0.1)
    folder = tmp_path_factory.mktemp("tiny") / "model"
    hf.save_pretrained(folder)
    return folder, load_pretrained(folder).eval(), hf.eval()


def hf_continuation(hf, ids, n):
    """(sum log p of the last n ids, whether each is the argmax), the sequence cut to the context."""
    ids = ids[-(CONTEXT + 1):]
    with torch.no_grad():
        logp = hf(torch.tensor([ids[:-1]])).logits[0].float().log_softmax(-1)
    rows = range(len(ids) - 1 - n, len(ids) - 1)
    return (sum(logp[r, ids[r + 1]].item() for r in rows), all(logp[r].argmax().item() == ids[r + 1] for r in rows))


def test_hellaswag_matches_transformers(models, tokenizer, tmp_path):
    _, ours, hf = models
    task = hellaswag.HellaSwag(hellaswag.load_records(write_hellaswag(tmp_path / "h.jsonl")))
    (acc, acc_norm) = [r["value"] for r in evaluate(ours, [task], batch_size=3, progress=False)]
    correct = correct_norm = 0
    rows = {r["ind"]: r for r in task.run(ours, task.items, batch_size=5, progress=lambda n: None)}
    for i, (ctx, endings, label) in enumerate(HELLASWAG):
        c = tokenizer.encode(ctx)
        scores = [(hf_continuation(hf, c + e, len(e))[0], len(e)) for e in (tokenizer.encode(" " + x) for x in endings)]
        sums, means = [s for s, _ in scores], [s / n for s, n in scores]
        assert rows[100 + i]["logprob"] == pytest.approx(sums, rel=1e-5, abs=1e-4)
        correct += sums.index(max(sums)) == label
        correct_norm += means.index(max(means)) == label
    assert acc == pytest.approx(correct / len(HELLASWAG), abs=1e-4)
    assert acc_norm == pytest.approx(correct_norm / len(HELLASWAG), abs=1e-4)
    assert 0 < correct_norm < len(HELLASWAG) or 0 < correct < len(HELLASWAG)  # not a degenerate fixture


def _lm_eval_preprocess(text):  # lm-evaluation-harness, lm_eval/tasks/hellaswag/utils.py, verbatim
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def test_hellaswag_lm_eval_method_matches_lm_evals_formula(models, tokenizer, tmp_path):
    """hellaswag.method=lm_eval against lm-eval's method written out here: _process_doc's query and
    choices, _encode_pair's split of the whole encoding, acc_norm = argmax(loglik / len(choice))."""
    _, ours, hf = models
    records = hellaswag.load_records(write_hellaswag(tmp_path / "h.jsonl"))
    records[0] = {**records[0], "ctx_a": "[header] How to fix a roof [title] Climb up.", "ctx_b": "the man"}
    task = hellaswag.HellaSwag(records, method="lm_eval")
    rows = {r["ind"]: r for r in task.run(ours, task.items, batch_size=5, progress=lambda n: None)}
    correct_norm = 0
    for r in records:
        query = _lm_eval_preprocess(r["activity_label"] + ": " + r["ctx_a"] + " " + r["ctx_b"].capitalize())
        choices = [_lm_eval_preprocess(e) for e in r["endings"]]
        context = tokenizer.encode(query)
        lls = []
        for choice in choices:
            whole = tokenizer.encode(query + " " + choice)
            lls.append(hf_continuation(hf, whole, len(whole) - len(context))[0])
        assert rows[r["ind"]]["logprob"] == pytest.approx(lls, rel=1e-5, abs=1e-4)
        norm = [ll / len(c) for ll, c in zip(lls, choices)]
        assert rows[r["ind"]]["pred_norm"] == norm.index(max(norm))
        correct_norm += norm.index(max(norm)) == r["label"]
    got = {m: v for m, v, _ in task.metrics(task.totals(list(rows.values())))}
    assert got["acc_norm"] == pytest.approx(correct_norm / len(records), abs=1e-4)
    with pytest.raises(ConfigError, match=r"hellaswag.method='bogus' is invalid: one of nanogpt, lm_eval"):
        hellaswag.HellaSwag(records, method="bogus")


def test_lambada_matches_transformers(models, tokenizer, tmp_path):
    _, ours, hf = models
    task = lambada.Lambada(lambada.load_records(write_lambada(tmp_path / "l.jsonl")))
    assert max(len(i["ctx_ids"]) for i in task.items) > CONTEXT  # one passage is cut from the left
    summary = evaluate(ours, [task], batch_size=4, progress=False, output_dir=tmp_path / "out")
    got = {r["metric"]: r["value"] for r in summary}
    hits, nll = 0, 0.0
    for text in LAMBADA:
        context, word = text.rsplit(" ", 1)
        w = tokenizer.encode(" " + word)
        lp, greedy = hf_continuation(hf, tokenizer.encode(context) + w, len(w))
        hits, nll = hits + greedy, nll - lp
    assert got["acc"] == pytest.approx(hits / len(LAMBADA), abs=1e-4)
    assert got["perplexity"] == pytest.approx(math.exp(nll / len(LAMBADA)), rel=1e-4)
    rows = [json.loads(line) for line in (tmp_path / "out" / "lambada.jsonl").read_text().splitlines()]
    assert [r["word"] for r in rows] == [t.rsplit(" ", 1)[1] for t in LAMBADA]
    assert all(r["n"] == len(LAMBADA) for r in json.loads((tmp_path / "out" / "summary.json").read_text()))


def test_lambada_greedy_hit_is_counted(models, tokenizer):
    """A passage whose last word is the model's own greedy continuation scores acc 1."""
    _, ours, hf = models
    ctx = tokenizer.encode("The cat jumped onto the")
    with torch.no_grad():
        nxt = hf(torch.tensor([ctx])).logits[0, -1].argmax().item()
    (scored,) = score_pairs(ours, [(ctx, [nxt])])
    assert scored.greedy and scored.tokens == 1


@pytest.mark.parametrize("stride", [None, 24])
def test_perplexity_matches_transformers_token_by_token(models, tokenizer, tmp_path, stride):
    _, ours, hf = models
    path = write_text(tmp_path / "t.txt")
    task = Perplexity([path], CONTEXT, stride)
    got = {r["metric"]: r["value"] for r in evaluate(ours, [task], batch_size=2, progress=False)}
    ids = [tokenizer.eot_id] + tokenizer.encode(path.read_text())
    s = stride or CONTEXT
    history = {}  # token t is predicted from ids[k*s:t], k = the window that scores it
    for t in range(1, len(ids)):
        history.setdefault(0 if t <= CONTEXT else math.ceil((t - CONTEXT) / s), []).append(t)
    nll = 0.0
    with torch.no_grad():
        for k, tokens in history.items():  # one causal forward per history start covers its tokens
            logp = hf(torch.tensor([ids[k * s:tokens[-1]]])).logits[0].float().log_softmax(-1)
            nll -= sum(logp[t - 1 - k * s, ids[t]].item() for t in tokens)
    n = len(ids) - 1
    assert got["loss"] == pytest.approx(nll / n, abs=1e-4)
    assert got["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-4)
    assert got["bits_per_byte"] == pytest.approx(nll / math.log(2) / len(path.read_bytes()), abs=1e-4)


def test_windows_score_every_token_once_with_history():
    for n, context, stride in ((200, 64, 64), (200, 64, 16), (65, 64, 64), (10, 64, 5)):
        spans = windows(n, context, stride)
        scored = [t for _, first, end in spans for t in range(first, end)]
        assert scored == list(range(1, n))
        for start, first, end in spans:
            assert end - 1 - start <= context  # inputs fit the model
            if start:
                assert first - start >= context - stride + 1  # history of every scored token


def test_download_is_cached_and_verified(tmp_path, monkeypatch, tokenizer):
    """The public file comes over HTTP once (from 127.0.0.1), is checked by its git blob id, then reused."""
    import threading

    from fake_hub import Hub
    from gpt_lightning import download
    from gpt_lightning.evaluate.files import dataset_file

    root = tmp_path / "hub"
    root.mkdir()
    served = write_hellaswag(root / "hellaswag_val.jsonl")
    server = Hub(root)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("GPT_LIGHTNING_CACHE", str(tmp_path / "cache"))
        monkeypatch.setenv("GPT_LIGHTNING_DATA_DIR", str(tmp_path / "empty"))
        for var in ("no_proxy", "NO_PROXY"):
            monkeypatch.setenv(var, "127.0.0.1")
        source = download.Source(f"{server.url}/hellaswag_val.jsonl", git_sha1=download.git_blob_sha1(served))
        monkeypatch.setitem(download.DATASETS, "hellaswag_val.jsonl", source)
        monkeypatch.setattr(hellaswag, "PUBLIC_ITEMS", len(HELLASWAG))
        assert len(hellaswag.load_records()) == len(HELLASWAG)
        assert len(hellaswag.load_records()) == len(HELLASWAG)
        assert [p for p, _ in server.requests] == ["/hellaswag_val.jsonl"]  # once, then the cache
        monkeypatch.setattr(hellaswag, "PUBLIC_ITEMS", 10042)
        with pytest.raises(ConfigError, match="expected 10042 items, found 6"):
            hellaswag.load_records()
        monkeypatch.setitem(download.DATASETS, "hellaswag_val.jsonl", download.Source(source.url, git_sha1="0" * 40))
        (tmp_path / "cache" / "data" / "hellaswag_val.jsonl").unlink()
        with pytest.raises(ConfigError, match="corrupt .*git blob sha1"):
            dataset_file("hellaswag_val.jsonl", None, "hellaswag.path")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_bad_files_are_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ctx": "x", "endings": ["a", "b", "c", "d"], "label": 1}\n{"ctx": "y", "endings": ["a"], "label": 0}\n')
    with pytest.raises(ConfigError, match=r"hellaswag.path: .*bad.jsonl line 2: needs \"endings\", a list of 4"):
        hellaswag.load_records(str(bad))
    bad.write_text('{"text": "oneword"}\n')
    with pytest.raises(ConfigError, match=r"line 1: the text needs a space"):
        lambada.load_records(str(bad))
    with pytest.raises(ConfigError, match=r"lambada.path='/nope.jsonl' is not a file"):
        lambada.load_records("/nope.jsonl")


def test_evaluate_cli_several_tasks(models, tmp_path):
    folder, ours, _ = models
    h, la, t = write_hellaswag(tmp_path / "h.jsonl"), write_lambada(tmp_path / "l.jsonl"), write_text(tmp_path / "t.txt")
    out = tmp_path / "out"
    proc = run_script("evaluate.py", ["init=checkpoint", f"init.path={folder}", "tasks=[hellaswag,lambada,perplexity]",
                                      f"hellaswag.path={h}", f"lambada.path={la}", f"text.path={t}", "limit=4",
                                      "batch_size=8", "progress=false", f"output_dir={out}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["task"], r["metric"]) for r in summary] == [
        ("hellaswag", "acc"), ("hellaswag", "acc_norm"), ("lambada", "acc"), ("lambada", "perplexity"),
        ("perplexity", "loss"), ("perplexity", "perplexity"), ("perplexity", "bits_per_byte")]
    assert [r["n"] for r in summary[:4]] == [4, 4, 4, 4]  # limit=4
    for name in ("hellaswag", "lambada", "perplexity"):
        assert len((out / f"{name}.jsonl").read_text().splitlines()) == (2 if name == "perplexity" else 4)  # 117 tokens: 2 windows of 64
    # the same numbers in process (the library) and in the printed table
    task = lambada.Lambada(lambada.load_records(str(la), limit=4))
    ppl = {r["metric"]: r["value"] for r in evaluate(ours, [task], progress=False)}["perplexity"]
    assert summary[3]["value"] == pytest.approx(ppl, rel=1e-5)
    assert f"{summary[3]['value']:.4f}" in proc.stdout and "lambada" in proc.stdout
    assert not (tmp_path / "outputs").exists()  # output_dir replaced the dated run folder


@pytest.mark.parametrize("override, message", [
    ("limit=0", "error: limit=0 is invalid: an integer >= 1 or null"),
    ("tasks=[hellaswag,squad]", "error: tasks=['hellaswag', 'squad'] is invalid: tasks are perplexity, hellaswag, lambada, judge"),
    ("text.stride=0", "error: text.stride=0 is invalid: an integer >= 1 or null"),
    ("judge.base_url=localhost", "error: judge.base_url='localhost' is invalid: an http(s) URL"),
    ("hellaswag.path=/nope.jsonl", "error: hellaswag.path='/nope.jsonl' is not a file"),
])
def test_bad_config_is_one_line_before_weights(tmp_path, override, message, tokenizer):
    import gpt_lightning.cli.hydra_adapter  # noqa: F401 (registers the config's resolver)
    from gpt_lightning.evaluate.job import run

    responses = write_responses(tmp_path / "r.jsonl")
    task = "task=" + {"judge": "judge", "hellaswag": "hellaswag"}.get(override.split(".")[0], "perplexity")
    cfg = plain(compose_config("evaluate", [
        "init=openai_355m", task, "text.data=verdict", f"judge.responses={responses}", override]))
    with pytest.raises(ConfigError) as err:  # init=openai_355m is never downloaded: checks come first
        run(cfg, tmp_path / "run")
    assert f"error: {err.value}".startswith(message)

