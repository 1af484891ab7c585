"""ParameterSummary: the model's size in one log line, in place of Lightning's table.

Lightning's summary of this module is a one-row table whose FLOPs column reads 0 (it counts
FLOPs only for modules with an ``example_input_array``); one line says what matters.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities.model_summary import get_human_readable_count

log = logging.getLogger("gpt_lightning")


class ParameterSummary(ModelSummary):
    @staticmethod
    def summarize(summary_data, total_parameters: int, trainable_parameters: int, model_size: float,
                  total_training_modes: dict, total_flops: int = 0, **kwargs: Any) -> None:
        log.info("model: %s parameters (%s trainable), %.1f MB", get_human_readable_count(int(total_parameters)),
                 get_human_readable_count(int(trainable_parameters)), model_size)
