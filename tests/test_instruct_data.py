"""Instruction data: template, record loading and its errors, split, collate masking, data module."""

import inspect
import json
import logging
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from helpers import ROOT, compose_config, data_dir
from gpt_lightning import ConfigError, get_tokenizer
from gpt_lightning.data.instruct import (Example, InstructCollator, InstructDataModule, count_truncated, load_records, split_records)
from gpt_lightning.data.template import PromptTemplate, format_prompt, template_from_config

E = 50256  # <|endoftext|>
X = -100  # ignored target

PREAMBLE = ("Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request.")


# ----------------------------------------------------------------------------- template
def test_template_with_input_matches_alpaca_exactly():
    prompt = format_prompt("Translate to French.", "Where is the station?")
    assert prompt == (
        f"{PREAMBLE}\n\n### Instruction:\nTranslate to French.\n\n"
        "### Input:\nWhere is the station?\n\n### Response:\n"
    )


def test_template_without_input_leaves_the_input_section_out():
    assert format_prompt("Convert 45 kilometers to meters.") == (
        f"{PREAMBLE}\n\n### Instruction:\nConvert 45 kilometers to meters.\n\n### Response:\n"
    )


def test_template_from_config_overrides_keys_and_rejects_unknown_ones():
    template = template_from_config({"preamble": "", "response_header": "### Answer:"})
    assert format_prompt("Say hi.", "", template) == "### Instruction:\nSay hi.\n\n### Answer:\n"
    assert template_from_config(None) == PromptTemplate()
    with pytest.raises(ConfigError, match=r"data\.template\.footer='x' is not a template key; known keys: preamble"):
        template_from_config({"footer": "x"})
    with pytest.raises(ConfigError, match=r"data\.template\.input_header=3 is invalid: a string"):
        template_from_config({"input_header": 3})


# ----------------------------------------------------------------------------- collate
# Three records of different lengths, with made-up token ids: prompt, then response + end-of-text.
BATCH = [
    Example([1, 2, 3], [4, 5, E]),  # 6 tokens
    Example([6, 7], [8, E]),  # 4 tokens
    Example([9, 10, 11, 12], [13, 14, 15, 16, E]),  # 9 tokens: the batch is 8 positions wide
]
INPUTS = [
    [1, 2, 3, 4, 5, E, E, E],
    [6, 7, 8, E, E, E, E, E],
    [9, 10, 11, 12, 13, 14, 15, 16],
]


def test_collate_shifts_and_ignores_padding_but_the_first_end_of_text():
    batch = InstructCollator(mask_prompt=False)(BATCH)
    assert batch["input_ids"].dtype == batch["targets"].dtype == torch.long
    assert batch["input_ids"].tolist() == INPUTS
    assert batch["targets"].tolist() == [
        [2, 3, 4, 5, E, X, X, X],
        [7, 8, E, X, X, X, X, X],
        [10, 11, 12, 13, 14, 15, 16, E],
    ]
    assert int((batch["targets"] != -100).sum()) == 5 + 3 + 8


def test_collate_masks_the_prompt_when_asked():
    batch = InstructCollator(mask_prompt=True)(BATCH)
    assert batch["input_ids"].tolist() == INPUTS  # masking touches the targets only
    assert batch["targets"].tolist() == [
        [X, X, 4, 5, E, X, X, X],  # the last prompt position predicts the first response token
        [X, 8, E, X, X, X, X, X],
        [X, X, X, 13, 14, 15, 16, E],
    ]
    assert int((batch["targets"] != -100).sum()) == 3 + 2 + 5


def test_collate_cuts_sequences_to_max_length_inputs():
    batch = InstructCollator(max_length=5, mask_prompt=True)(BATCH)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, E, E], [9, 10, 11, 12, 13]]
    assert batch["targets"].tolist() == [[X, X, 4, 5, E], [X, 8, E, X, X], [X, X, X, 13, 14]]
    assert count_truncated(BATCH, 5) == 1  # only the 9-token record is longer than 5 + 1
    assert count_truncated(BATCH, 3) == 2
    assert count_truncated(BATCH, None) == 0


# ----------------------------------------------------------------------------- records
RECORDS = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Reverse the word.", "input": "stressed", "output": "desserts"},
    {"instruction": "Name a colour.", "output": "Blue."},  # input is optional
]


def test_json_and_json_lines_load_the_same_records(tmp_path):
    as_json = tmp_path / "records.json"
    as_json.write_text(json.dumps(RECORDS, indent=2))
    as_lines = tmp_path / "records.jsonl"
    as_lines.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")  # blank lines are skipped
    expected = [RECORDS[0], RECORDS[1], {**RECORDS[2], "input": ""}]
    assert load_records(as_json) == expected
    assert load_records(as_lines) == expected


OK = '{"instruction": "a", "output": "b"}'
BAD_FILES = [  # (file name, text, expected message)
    pytest.param("bad.json", "  \n", r"bad\.json: the file is empty", id="empty"),
    pytest.param("bad.json", '[\n  {"instruction": "a",\n  "output": }\n]',
                 r"bad\.json: invalid JSON at line 3, column 13", id="invalid JSON"),
    pytest.param("bad.json", f"{OK}\n{OK}", r"bad\.json: invalid JSON at line 2.*must be named \*\.jsonl",
                 id="JSON Lines in a .json"),
    pytest.param("bad.json", OK, r"bad\.json: the top level is a JSON object, expected a list", id="not a list"),
    pytest.param("bad.json", "[]", r"bad\.json: holds no records", id="no records"),
    pytest.param("bad.json", f'[{OK}, "just text"]', r"bad\.json: record 2 \(line 1\) is a JSON string, expected an object",
                 id="record not an object"),
    pytest.param("bad.json", f'[{OK}, {OK}, {{"instruction": "c"}}]',
                 r"bad\.json: record 3 \(line 1\) has no 'output' key \(keys: \['instruction'\]\)", id="missing key"),
    pytest.param("bad.json", '[{"instruction": "a", "input": 42, "output": "b"}]',
                 r"bad\.json: record 1 \(line 1\): 'input' is a JSON number \(42\), expected a string", id="non-string value"),
    pytest.param("bad.jsonl", f'{OK}\n\n{{"instruction": "a" "output": "b"}}\n',
                 r"bad\.jsonl: record 2 \(line 3\): invalid JSON at column 21: Expecting ',' delimiter",
                 id="bad JSON line"),
    pytest.param("bad.json", f'[\n  {OK},\n  {OK},\n\n  {{"instruction": "c", "output": 7}}\n]',
                 r"bad\.json: record 3 \(line 5\): 'output' is a JSON number", id="record counted from 1 with its line"),
    pytest.param("bad.jsonl", f'{OK}\n{{"instruction": null, "output": "b"}}\n',
                 r"bad\.jsonl: record 2 \(line 2\): 'instruction' is a JSON null \(None\), expected a string",
                 id="bad JSON Lines record"),
]


@pytest.mark.parametrize("name, text, message", BAD_FILES)
def test_bad_record_files_give_one_line_naming_file_and_record(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_records(tmp_path / name)
    assert "\n" not in str(err.value)


def test_missing_file_names_the_path_and_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.json: no such file; data\.path must name a JSON"):
        load_records(tmp_path / "nope.json")


# ----------------------------------------------------------------------------- split
@pytest.fixture(scope="module")
def public_records():
    return load_records(data_dir() / "instruction-data.json")


def test_split_is_85_10_5_disjoint_and_seeded(public_records):
    index = {id(record): i for i, record in enumerate(public_records)}

    def indices(seed):
        return [[index[id(r)] for r in part] for part in split_records(public_records, seed=seed)]

    train, val, test = indices(123)
    assert (len(train), len(val), len(test)) == (935, 110, 55)
    assert set(train) | set(val) | set(test) == set(range(1100))  # disjoint and complete
    assert indices(123) == [train, val, test]
    other = indices(7)
    assert other != [train, val, test] and set(other[2]) != set(test)


def test_split_fractions_are_validated_and_may_leave_records_out(public_records):
    parts = split_records(public_records, 0.5, 0.1, 0.1, seed=0)
    assert [len(p) for p in parts] == [550, 110, 110]
    with pytest.raises(ConfigError, match=r"data\.val_fraction=0 is invalid: a fraction of the records in \(0, 1\]"):
        split_records(public_records, 0.9, 0, 0.1)
    with pytest.raises(ConfigError, match=r"data\.train_fraction=0\.9 is invalid: .*sum to 1\.05"):
        split_records(public_records, 0.9, 0.1, 0.05)
    with pytest.raises(ConfigError, match=r"data\.test_fraction=0\.05 is invalid: it leaves no record of 10"):
        split_records(public_records[:10], 0.85, 0.1, 0.05)


# ----------------------------------------------------------------------------- data module
@pytest.fixture(scope="module")
def module():
    dm = InstructDataModule(path=str(data_dir() / "instruction-data.json"), batch_size=4, max_length=1024)
    dm.setup("fit")
    return dm


def test_data_module_batches_from_the_public_set(module):
    assert (len(module.train_records), len(module.val_records), len(module.test_records)) == (935, 110, 55)
    assert module.num_truncated == 0
    batch = next(iter(module.val_dataloader()))  # not shuffled: row 0 is val_records[0]
    inputs, targets = batch["input_ids"], batch["targets"]
    assert inputs.dtype == targets.dtype == torch.long
    assert inputs.shape == targets.shape and inputs.shape[0] == 4
    kept = targets[:, :-1] != X
    assert torch.equal(inputs[:, 1:][kept], targets[:, :-1][kept])  # targets are inputs shifted by one
    record, tok = module.val_records[0], get_tokenizer()
    assert tok.decode(inputs[0].tolist()).startswith(format_prompt(record["instruction"], record["input"]))
    assert tok.decode(targets[0][targets[0] != X].tolist()) == record["output"] + "<|endoftext|>"


def test_training_order_is_shuffled_but_seeded(module):
    first = [next(iter(module.train_dataloader()))["input_ids"] for _ in range(2)]
    assert torch.equal(first[0], first[1])
    unshuffled = module.collator([module._examples["train"][i] for i in range(4)])["input_ids"]
    assert not torch.equal(first[0], unshuffled)


def test_train_loader_shards_across_ranks(module, monkeypatch):
    """Under DDP each rank reads its own half of the shuffled training records."""
    import types

    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(module, "trainer", types.SimpleNamespace(
            global_rank=rank, world_size=2, training=True, current_epoch=0))
        loader = module.train_dataloader()
        shares.append(list(loader.sampler))
    assert len(shares[0]) == len(shares[1]) == 468  # 935 records, padded to an even split
    assert len(set(shares[0]) | set(shares[1])) == 935
    assert set(next(iter(loader))) == {"input_ids", "targets"}


def test_short_max_length_cuts_records_and_reports_them_once(caplog):
    dm = InstructDataModule(path=str(data_dir() / "instruction-data.json"), batch_size=64, max_length=40)
    with caplog.at_level(logging.WARNING, logger="gpt_lightning.data.instruct"):
        dm.setup("fit")
        dm.setup("test")  # a second stage reuses the first set-up
    lengths = [e.num_tokens for examples in dm._examples.values() for e in examples]
    assert dm.num_truncated == sum(n > 41 for n in lengths) > 0
    assert [r.getMessage().split(" instruction")[0] for r in caplog.records] == [f"{dm.num_truncated} of 1100"]
    assert max(batch["input_ids"].shape[1] for batch in dm.val_dataloader()) == 40


def test_hydra_config_instantiates_the_module_with_the_defaults(tmp_path):
    cfg = compose_config("finetune", [])
    dm = instantiate(cfg.data, max_length=256)
    default = InstructDataModule()
    assert isinstance(dm, InstructDataModule) and dm.max_length == 256
    assert (dm.path, dm.batch_size, dm.mask_prompt, dm.fractions, dm.seed, dm.num_workers) == (
        None, 8, True, (0.85, 0.10, 0.05), default.seed, 0)
    assert dm.template == PromptTemplate()
    raw = OmegaConf.load(ROOT / "conf" / "data" / "instruct.yaml")
    assert set(raw) - {"_target_"} == set(inspect.signature(InstructDataModule).parameters)


def test_top_level_seed_drives_the_split_and_the_batch_order(tmp_path, public_records):
    """finetune.py seed=7 must give another split and order than the default seed 123."""
    def first_batch_and_split(seed):
        cfg = compose_config("finetune", [f"seed={seed}"])
        assert cfg.data.seed == seed
        dm = instantiate(cfg.data, max_length=64)
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))["input_ids"], [r["instruction"] for r in dm.val_records]

    batch_7, val_7 = first_batch_and_split(7)
    batch_123, val_123 = first_batch_and_split(123)
    assert val_7 != val_123
    assert batch_7.shape != batch_123.shape or not torch.equal(batch_7, batch_123)
    assert val_7 == [r["instruction"] for r in split_records(public_records, seed=7)[1]]


@pytest.mark.parametrize("key, value, expected", [
    ("batch_size", 0, r"data\.batch_size=0 is invalid: an integer >= 1"),
    ("max_length", -1, r"data\.max_length=-1 is invalid: an integer >= 1 or null"),
    ("mask_prompt", "yes", r"data\.mask_prompt='yes' is invalid: true or false"),
    ("num_workers", 1.5, r"data\.num_workers=1\.5 is invalid: an integer >= 0"),
    ("test_fraction", 1.5, r"data\.test_fraction=1\.5 is invalid"),
])
def test_bad_data_keys_name_key_value_and_fix(key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        InstructDataModule(**{key: value})


def test_missing_custom_path_names_the_key(tmp_path: Path):
    dm = InstructDataModule(path=str(tmp_path / "mine.json"))
    with pytest.raises(ConfigError, match=r"data\.path='.*mine\.json' does not exist"):
        dm.setup("fit")


def test_a_rank_without_validation_records_gets_one_zero_weight_batch(tmp_path, monkeypatch):
    """1 validation record for 2 ranks: rank 1 gets it again with every target ignored."""
    import types

    records = [{"instruction": f"Count to {i}.", "output": " ".join(map(str, range(i)))} for i in range(1, 11)]
    (tmp_path / "r.json").write_text(json.dumps(records))
    dm = InstructDataModule(path=str(tmp_path / "r.json"), batch_size=4, max_length=64,
                            train_fraction=0.8, val_fraction=0.1, test_fraction=0.1)
    dm.setup("fit")
    batches = []
    for rank in (0, 1):
        monkeypatch.setattr(dm, "trainer", types.SimpleNamespace(global_rank=rank, world_size=2, training=False))
        batches.append(list(dm.val_dataloader()))
    assert [len(b) for b in batches] == [1, 1]
    real, padding = batches[0][0], batches[1][0]
    assert (real["targets"] != X).sum() > 0 and (padding["targets"] != X).sum() == 0
    assert torch.equal(real["input_ids"], padding["input_ids"]) and (padding["targets"] == X).all()
