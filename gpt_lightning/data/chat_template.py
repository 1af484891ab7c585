"""The instruction template as a Hugging Face ``chat_template`` (Jinja), and rendering it.

An instruction-tuned export writes :func:`chat_template` of its data template into
``tokenizer_config.json``, so ``AutoTokenizer.apply_chat_template(messages)`` builds the very
text (and token ids) that ``generate.py chat=true`` and serve.py's chat endpoint build:

- every user message is the instruction of one prompt (``PromptTemplate.format_prompt``),
- an assistant message follows its prompt, stripped, then a blank line,
- system (or developer) messages, joined by a blank line, replace the preamble.

The prompt already ends with the response header, so ``add_generation_prompt`` adds nothing.
The literal texts are written as Jinja string literals on one line (no newline follows a
tag), so transformers' ``trim_blocks``/``lstrip_blocks`` settings leave them as they are.
:func:`render` renders a template the way transformers does (a sandboxed Jinja environment
with those settings), for serve.py and generate.py to use the template an export declares.
"""

from __future__ import annotations

import json
from pathlib import Path

from gpt_lightning.data.template import PromptTemplate
from gpt_lightning.errors import ConfigError

TOKENIZER_CONFIG = "tokenizer_config.json"


def _literal(text: str) -> str:
    """A Jinja string literal of ``text`` (Jinja reads its escapes as Python's unicode-escape)."""
    return json.dumps(text, ensure_ascii=False)


def chat_template(template: PromptTemplate) -> str:
    """The Jinja chat template that renders conversations in ``template`` (see the module docstring)."""
    t = template
    return "".join([
        "{%- set ns = namespace(system=[]) -%}",
        "{%- for m in messages -%}{%- if m['role'] in ['system', 'developer'] -%}",
        "{%- set ns.system = ns.system + [m['content']] -%}{%- endif -%}{%- endfor -%}",
        "{%- set preamble = ns.system | join('\\n\\n') if ns.system else ", _literal(t.preamble), " -%}",
        "{%- for m in messages -%}",
        "{%- if m['role'] == 'user' -%}",
        "{%- if preamble -%}{{ preamble ~ '\\n\\n' }}{%- endif -%}",
        "{{ ", _literal(t.instruction_header + "\n"), " ~ m['content'] ~ '\\n\\n' ~ ",
        _literal(t.response_header + "\n"), " }}",
        "{%- elif m['role'] == 'assistant' -%}",
        "{{ m['content'] | trim ~ '\\n\\n' }}",
        "{%- endif -%}",
        "{%- endfor -%}",
    ])


def render(template: str, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """``template`` applied to ``messages`` as transformers' ``apply_chat_template`` renders it."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    except TemplateError as err:
        raise ConfigError(f"the model's chat_template cannot render this conversation: {err}") from None


def declared_chat_template(path: str | Path | None) -> str | None:
    """The ``chat_template`` that the export folder at ``path`` (or beside a weights file) declares."""
    if not path:
        return None
    path = Path(path).expanduser()
    folder = path if path.is_dir() else path.parent
    config = folder / TOKENIZER_CONFIG
    if not config.is_file():
        return None
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise ConfigError(f"{config} is not a JSON object; it must be a tokenizer_config.json") from None
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{config}: chat_template is not a string (named templates are not supported)")
    return value
