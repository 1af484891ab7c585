"""``trainer.tokens_per_step``: the global batch in tokens, as GPT-2 reproductions state it
(524,288 = 2^19), turned into the gradient accumulation that gives it.

    accumulation = tokens_per_step / (data.batch_size x data.max_length x ranks)

A value that does not divide evenly is refused with one line that names the nearest values
that do, rather than silently training on another batch size.
"""

from __future__ import annotations

from gpt_lightning.errors import bad_value


def accumulation(tokens_per_step: int, batch_size: int, max_length: int, world_size: int) -> int:
    """Micro-batches per optimizer step for ``tokens_per_step`` tokens per step, or a ConfigError."""
    micro = batch_size * max_length * world_size
    steps, rest = divmod(tokens_per_step, micro)
    if rest or steps < 1:
        lower, upper = max(steps, 1) * micro, (steps + 1) * micro
        options = f"{lower:,} or {upper:,}" if steps >= 1 else f"{micro:,}"
        raise bad_value("trainer.tokens_per_step", tokens_per_step,
                        f"a multiple of data.batch_size x data.max_length x ranks = {batch_size} x {max_length} x "
                        f"{world_size} = {micro:,} tokens per micro-batch (e.g. {options}), or change data.batch_size")
    return steps


def static_world_size(trainer) -> int | None:
    """Ranks a TrainerConfig will run, when known before Lightning starts (None: devices auto / -1)."""
    devices = trainer.devices
    if isinstance(devices, list):
        return len(devices) * trainer.num_nodes
    if isinstance(devices, int) and devices >= 1:
        return devices * trainer.num_nodes
    return None
