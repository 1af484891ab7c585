"""Prompts as token ids: a plain prompt, and a chat history cut to fit the context.

Shared by generate.py's chat and serve.py's chat endpoint. A conversation is rendered as
one text and encoded once, as ``AutoTokenizer.apply_chat_template`` does with the
``chat_template`` of an export (data/chat_template.py): the built-in instruction template,
or the Jinja template the loaded export declares.
"""

from __future__ import annotations

from dataclasses import replace

from gpt_lightning.data.template import DEFAULT_TEMPLATE, PromptTemplate, format_prompt
from gpt_lightning.tokenizer import Tokenizer


def encode(tok: Tokenizer, text: str) -> list[int]:
    """Token ids of ``text``; an empty prompt starts a new document at <|endoftext|>."""
    return tok.encode(text) or [tok.eot_id]


def chat_text(history: list[tuple[str, str]], message: str, template: PromptTemplate | None = None,
              system: list[str] | None = None, chat_template: str | None = None) -> str:
    """The conversation as text: past turns (prompt + stripped reply + blank line), then the new
    prompt. ``system`` messages replace the preamble; ``chat_template`` (Jinja) renders instead."""
    if chat_template is not None:
        from gpt_lightning.data.chat_template import render

        messages = [{"role": "system", "content": s} for s in system or []]
        for user, reply in history:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        return render(chat_template, messages + [{"role": "user", "content": message}])
    if system:
        template = replace(template or DEFAULT_TEMPLATE, preamble="\n\n".join(system))
    turns = [format_prompt(user, template=template) + reply.strip() + "\n\n" for user, reply in history]
    return "".join(turns) + format_prompt(message, template=template)


def chat_prompt(tok: Tokenizer, history: list[tuple[str, str]], message: str, budget: int,
                template: PromptTemplate | None = None, system: list[str] | None = None,
                chat_template: str | None = None) -> list[int]:
    """The conversation's tokens (see :func:`chat_text`), dropping the oldest turns until it
    fits ``budget`` tokens (the newest message always stays)."""
    for start in range(len(history) + 1):
        ids = encode(tok, chat_text(history[start:], message, template, system, chat_template))
        if len(ids) <= budget:
            return ids
    return ids
