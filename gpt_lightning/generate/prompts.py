"""Prompts as token ids: a plain prompt, and a chat history cut to fit the context.

Shared by generate.py's chat and serve.py's chat endpoint.
"""

from __future__ import annotations

from gpt_lightning.data.template import PromptTemplate, format_prompt
from gpt_lightning.tokenizer import Tokenizer


def encode(tok: Tokenizer, text: str) -> list[int]:
    """Token ids of ``text``; an empty prompt starts a new document at <|endoftext|>."""
    return tok.encode(text) or [tok.eot_id]


def chat_prompt(tok: Tokenizer, history: list[tuple[str, str]], message: str, budget: int,
                template: PromptTemplate | None = None) -> list[int]:
    """Past turns (instruction template + reply) and the new message, as tokens, dropping
    the oldest turns until it fits ``budget`` tokens (the newest message always stays).
    The server (gpt_lightning.serve) renders chat requests with it too."""
    turns = [encode(tok, format_prompt(user, template=template) + reply + "\n\n") for user, reply in history]
    ids = encode(tok, format_prompt(message, template=template))
    for turn in reversed(turns):
        if len(turn) + len(ids) > budget:
            break
        ids = turn + ids
    return ids
