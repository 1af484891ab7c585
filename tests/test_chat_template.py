"""Exports carry their prompt template as a chat_template: transformers' apply_chat_template
gives exactly the ids that generate.py's chat and serve.py's chat endpoint build."""

from __future__ import annotations

import json

import pytest

from gpt_lightning.data.chat_template import chat_template, declared_chat_template
from gpt_lightning.data.template import DEFAULT_TEMPLATE, PromptTemplate
from gpt_lightning.generate.prompts import chat_prompt
from gpt_lightning.weights.tokenizer_files import write_tokenizer_files

CUSTOM = PromptTemplate(preamble="", instruction_header='Q: "quoted" {{ not jinja }} \\ é 😀', input_header="In:",
                        response_header="A:")
CONVERSATIONS = [
    ([], [], "Name a colour."),
    ([], [("Hi!", "  Hello there.\n"), ("And  then?", "Nothing.")], "Bye\n"),
    (["Be brief.", "Answer in English."], [("What is 2+2?", "4")], "And 3+3?"),
    ([""], [], "An empty system message replaces the preamble with nothing."),
]


def messages_of(system, history, message):
    out = [{"role": "system", "content": s} for s in system]
    for user, reply in history:
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return out + [{"role": "user", "content": message}]


@pytest.mark.parametrize("template", [DEFAULT_TEMPLATE, CUSTOM], ids=["alpaca", "custom"])
def test_apply_chat_template_gives_the_ids_generate_and_serve_build(template, tokenizer, tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "export"
    folder.mkdir()
    write_tokenizer_files(folder, 128, chat_template(template))
    assert declared_chat_template(folder) == json.loads((folder / "tokenizer_config.json").read_text())["chat_template"]
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    for system, history, message in CONVERSATIONS:
        theirs = hf.apply_chat_template(messages_of(system, history, message), tokenize=True,
                                        add_generation_prompt=True)
        theirs = list(theirs["input_ids"] if hasattr(theirs, "keys") else theirs)
        # the built-in template (what an export without chat_template gets) and the declared one
        builtin = chat_prompt(tokenizer, history, message, 10_000, template=template, system=system)
        declared = chat_prompt(tokenizer, history, message, 10_000, system=system,
                               chat_template=declared_chat_template(folder))
        assert theirs == builtin == declared, (system, history, message)
    if template is DEFAULT_TEMPLATE:  # the text is the instruction template's, turn after turn
        text = hf.apply_chat_template(messages_of([], [("Hi!", "Hello.")], "Bye"), tokenize=False)
        assert text == DEFAULT_TEMPLATE.format_prompt("Hi!") + "Hello.\n\n" + DEFAULT_TEMPLATE.format_prompt("Bye")


def test_chat_drops_oldest_turns_with_a_declared_template(tokenizer):
    history = [(f"question {i}", f"answer {i}") for i in range(4)]
    template = chat_template(CUSTOM)
    full = chat_prompt(tokenizer, history, "last", 10_000, chat_template=template)
    cut = tokenizer.decode(chat_prompt(tokenizer, history, "last", len(full) - 1, chat_template=template))
    assert "question 0" not in cut and "question 1" in cut and cut.endswith(CUSTOM.format_prompt("last"))


def test_serve_renders_chat_in_the_template_the_export_declares(tokenizer, tmp_path):
    pytest.importorskip("fastapi")
    from types import SimpleNamespace

    from gpt_lightning.serve.routes import ServeSettings, _Service
    from gpt_lightning.serve.schemas import ChatRequest

    folder = tmp_path / "export"
    folder.mkdir()
    write_tokenizer_files(folder, 128, chat_template(CUSTOM))
    scheduler = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(context_length=128)))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    request = ChatRequest(messages=messages)
    for declared, template in ((declared_chat_template(folder), CUSTOM), (None, DEFAULT_TEMPLATE)):
        service = _Service(scheduler, tokenizer, ServeSettings("m", 100, 16, 1, chat_template=declared))
        [ids] = service._chat_prompt(request, 16)
        assert ids == chat_prompt(tokenizer, [("Hi", "Hello.")], "Bye", 112, template=template, system=["Be brief."])
    assert tokenizer.decode(ids).startswith("Be brief.\n\n### Instruction:\nHi")  # the built-in one without a declared one
