"""schedule.py: linear warmup, then cosine decay to a minimum."""

import math

import pytest

from gpt_lightning import ConfigError
from gpt_lightning.train.schedule import lr_at, warmup_steps_from


def test_schedule_formula():
    kw = dict(peak_lr=1e-3, min_lr=1e-4, warmup_steps=10, total_steps=110)
    assert lr_at(0, **kw) == pytest.approx(1e-4)
    assert lr_at(9, **kw) == pytest.approx(1e-3)
    assert lr_at(10, **kw) == pytest.approx(1e-3)
    assert lr_at(60, **kw) == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, **kw) == pytest.approx(1e-4)
    assert lr_at(500, **kw) == pytest.approx(1e-4)
    assert warmup_steps_from(0.1, 200) == 20 and warmup_steps_from(7, 200) == 7
    with pytest.raises(ConfigError, match="optim.warmup"):
        warmup_steps_from(-1, 100)
