"""The Alpaca prompt template used for instruction fine-tuning and for answering prompts.

With the defaults a record becomes (the ``### Input:`` section and the blank line before it
are left out when the input is empty)::

    Below is an instruction that describes a task. Write a response that appropriately completes the request.

    ### Instruction:
    {instruction}

    ### Input:
    {input}

    ### Response:
    {output}

The prompt is everything up to and including ``"### Response:\\n"``; the response is the
output text. They are kept apart so training can mask the prompt and generation can feed
the model exactly the prompt it was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from gpt_lightning.errors import ConfigError, bad_value

DEFAULT_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


@dataclass(frozen=True)
class PromptTemplate:
    """Section texts of the prompt; sections are separated by one blank line."""

    preamble: str = DEFAULT_PREAMBLE  # first paragraph; "" leaves it out
    instruction_header: str = "### Instruction:"  # line before the instruction
    input_header: str = "### Input:"  # line before the input (section skipped if input is "")
    response_header: str = "### Response:"  # last line of the prompt; the response follows it

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, str):
                raise bad_value(f"data.template.{field.name}", value, "a string")

    def format_prompt(self, instruction: str, input: str = "") -> str:  # noqa: A002 (record key)
        """The text the model sees before its answer, ending with the response header and a newline."""
        sections = [self.preamble, f"{self.instruction_header}\n{instruction}"]
        if input:
            sections.append(f"{self.input_header}\n{input}")
        sections.append(f"{self.response_header}\n")
        return "\n\n".join(section for section in sections if section)


DEFAULT_TEMPLATE = PromptTemplate()


def template_from_config(node: Mapping | PromptTemplate | None) -> PromptTemplate:
    """Build the template from the ``data.template`` config node; None gives the default.

    Keys left out keep their default; an unknown key is a :class:`ConfigError`.
    """
    if node is None:
        return DEFAULT_TEMPLATE
    if isinstance(node, PromptTemplate):
        return node
    if not isinstance(node, Mapping):
        raise bad_value("data.template", node, "a mapping with keys " + ", ".join(_keys()))
    unknown = sorted(set(node) - set(_keys()))
    if unknown:
        key = unknown[0]
        raise ConfigError(f"data.template.{key}={node[key]!r} is not a template key; known keys: {', '.join(_keys())}")
    return PromptTemplate(**dict(node))


def format_prompt(instruction: str, input: str = "", template: PromptTemplate | None = None) -> str:  # noqa: A002
    """The prompt for one instruction (and optional input) in ``template`` (default: Alpaca)."""
    return (template or DEFAULT_TEMPLATE).format_prompt(instruction, input)


def _keys() -> list[str]:
    return [field.name for field in fields(PromptTemplate)]
