"""Learning-rate schedule: linear warmup, then cosine decay to a minimum, per optimizer step."""

from __future__ import annotations

import math

from gpt_lightning.errors import bad_value


def warmup_steps_from(warmup: int | float, total_steps: int) -> int:
    """``optim.warmup`` as steps (an int >= 0) or as a fraction of all steps (a float < 1)."""
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or warmup < 0:
        raise bad_value("optim.warmup", warmup, "a step count (int >= 0) or a fraction of all steps (0.0-1.0)")
    if isinstance(warmup, float):
        if warmup > 1.0:
            raise bad_value("optim.warmup", warmup, "a fraction in [0, 1] or an integer step count")
        return int(round(warmup * total_steps))
    return int(warmup)


def lr_at(step: int, *, peak_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """The learning rate for optimizer step ``step`` (0-based).

    Warmup: peak_lr * (step + 1) / warmup_steps for step < warmup_steps.
    Then: min_lr + (peak_lr - min_lr) * (1 + cos(pi * progress)) / 2, progress going from 0
    at the end of warmup to 1 at ``total_steps`` (and staying at min_lr after it).
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_warning(warmup: int | float, warmup_steps: int, total_steps: int, peak_lr: float) -> str | None:
    """A warning when the warmup outlasts the run (the learning rate never reaches its peak)."""
    if warmup_steps <= total_steps:
        return None
    reached = lr_at(total_steps - 1, peak_lr=peak_lr, min_lr=0.0, warmup_steps=warmup_steps, total_steps=total_steps)
    return (f"optim.warmup={warmup} is {warmup_steps} steps but the whole run has {total_steps} optimizer steps: "
            f"the learning rate only climbs to {reached:.3g} of optim.lr={peak_lr:g} "
            f"({100 * reached / peak_lr:.0f}%); use optim.warmup<={total_steps} or a fraction such as 0.1")
