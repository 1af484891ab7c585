"""generate.py end to end on a tiny exported model: as a subprocess (exit codes, streaming)
and composed in-process with Hydra (files, batches, instruct, chat)."""

import io
import json

import pytest
import torch
from helpers import compose_config, run_script

from gpt_lightning.weights.hf_io import save_pretrained
from gpt_lightning import GPT, ConfigError, GPTConfig
from gpt_lightning.generate import job as generate_cli
from gpt_lightning.config.schemas import parse
from gpt_lightning.config.generate import GenerateConfig
from gpt_lightning.generate.prompts import chat_prompt
from gpt_lightning.cli.hydra_adapter import plain
from gpt_lightning.generate.sampling import generate as generate_tokens
from gpt_lightning.data.template import format_prompt





@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A 1-layer GPT with the GPT-2 vocabulary, written as our export folder."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50257, context_length=256, n_embd=16, n_layers=1, n_heads=2)).eval()
    return save_pretrained(model, tmp_path_factory.mktemp("tiny_export")), model


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second OpenMP thread costs more than it gives


def compose(tmp_path, export, *overrides):
    return plain(compose_config("generate", [
        "init=checkpoint", f"init.path={export[0]}", "device=cpu", "max_new_tokens=6", *overrides]))


def greedy_text(model, tok, text, n=6):
    out = generate_tokens(model, [tok.encode(text)], max_new_tokens=n, temperature=0.0, eos_id=tok.eot_id)[0]
    return tok.decode([t for t in out if t != tok.eot_id])


def test_cli_streams_the_greedy_continuation(tmp_path, export, tokenizer):
    result = run_script("generate.py", ["init=checkpoint", f"init.path={export[0]}", "prompt=Hello there",
                                        "temperature=0", "max_new_tokens=8"], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello there" + greedy_text(export[1], tokenizer, "Hello there", 8) + "\n"
    assert "tokens/s]" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no run folder, no log file


def test_cli_bad_value_is_one_line_and_exit_code_2(tmp_path, export):
    result = run_script("generate.py", ["init=checkpoint", f"init.path={export[0]}", "top_p=1.5"],
                        cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: top_p=1.5 is invalid") and result.stderr.count("\n") == 1


def test_prompt_file_batches_samples_and_output(tmp_path, export, tokenizer, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat\n\nA dog sat\nOnce upon a time\n")
    records = {}
    for batch_size in (1, 4):  # per-completion seeds: the batch size must not change the text
        out = tmp_path / f"out{batch_size}.jsonl"
        cfg = compose(tmp_path, export, f"prompt_file={prompts}", "num_samples=2", f"batch_size={batch_size}",
                      f"output={out}", "temperature=1.0", "seed=5")
        generate_cli.run(cfg)
        records[batch_size] = [json.loads(line) for line in out.read_text().splitlines()]
    rows = records[4]
    assert [(r["prompt"], r["sample"]) for r in rows] == [
        (p, s) for p in ("The cat", "A dog sat", "Once upon a time") for s in (0, 1)]
    assert all(r["new_tokens"] == 6 and r["tokens_per_s"] > 0 for r in rows)
    assert rows[0]["completion"] != rows[1]["completion"]  # two samples of one prompt
    assert [r["completion"] for r in rows] == [r["completion"] for r in records[1]]
    stdout = capsys.readouterr().out
    assert "=== [6/6] prompt 3, sample 2 ===" in stdout and rows[5]["completion"] in stdout


def test_json_lines_prompt_file(tmp_path, export):
    good = tmp_path / "prompts.jsonl"
    good.write_text(json.dumps({"prompt": "Line one\nline two", "id": 1}) + "\n")
    assert generate_cli.read_prompts(parse(GenerateConfig, compose(tmp_path, export, f"prompt_file={good}"), "")) == ["Line one\nline two"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt field"}\n')
    with pytest.raises(ConfigError, match=r"^prompt_file=.*bad.jsonl:1"):
        generate_cli.read_prompts(parse(GenerateConfig, compose(tmp_path, export, f"prompt_file={bad}"), ""))


def test_instruct_prints_only_the_response(tmp_path, export, tokenizer, capsys):
    generate_cli.run(compose(tmp_path, export, "instruct=true", "prompt=Name a colour.", "temperature=0"))
    expected = greedy_text(export[1], tokenizer, format_prompt("Name a colour."))
    assert capsys.readouterr().out == expected + "\n"


def test_stream_and_stop_strings_agree_with_the_file(tmp_path, export, tokenizer, capsys):
    free = greedy_text(export[1], tokenizer, "Hello", 12)
    stop = free[len(free) // 2:len(free) // 2 + 2]
    out = tmp_path / "out.jsonl"
    generate_cli.run(compose(tmp_path, export, "prompt=Hello", "temperature=0", "max_new_tokens=12",
                             f"output={out}", f"stop=[{json.dumps(stop)}]"))
    completion = json.loads(out.read_text())["completion"]
    assert completion == free[:free.index(stop)]
    assert capsys.readouterr().out == "Hello" + completion + "\n"


def test_chat_keeps_history_and_ends_on_quit(tmp_path, export, tokenizer, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi!\n\nAnd then?\n/quit\nnever read\n"))
    prompts = []
    real = generate_cli.generate
    monkeypatch.setattr(generate_cli, "generate", lambda model, p, **kw: prompts.append(p[0]) or real(model, p, **kw))
    generate_cli.run(compose(tmp_path, export, "chat=true", "temperature=0", "max_new_tokens=4"))
    assert len(prompts) == 2  # the empty line is skipped, /quit ends before "never read"
    first = tokenizer.decode(prompts[0])
    assert first == format_prompt("Hi!")
    assert tokenizer.decode(prompts[1]).startswith(first) and tokenizer.decode(prompts[1]).endswith(format_prompt("And then?"))


def test_chat_drops_the_oldest_turns_first(tokenizer):
    history = [(f"question {i}", f"answer {i}") for i in range(6)]
    full = chat_prompt(tokenizer, history, "last", budget=10_000)
    budget = len(full) - 1  # one token too many: the oldest turn has to go
    text = tokenizer.decode(chat_prompt(tokenizer, history, "last", budget))
    assert "question 0" not in text and "question 1" in text and text.endswith(format_prompt("last"))


@pytest.mark.parametrize("override, key", [
    ("num_samples=0", "num_samples"),
    ("batch_size=-1", "batch_size"),
    ("dtype=float8", "dtype"),
    ("device=tpu", "device"),
    ("num_beams=2", "num_beams"),  # with the default temperature 0.8
])
def test_bad_cli_values_name_the_key(tmp_path, export, override, key):
    with pytest.raises(ConfigError, match=rf"^{key}="):
        generate_cli.run(compose(tmp_path, export, override))
