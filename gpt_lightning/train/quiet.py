"""What a run prints: each line once, and no message a user cannot act on.

Lightning adds its own console handler to the ``lightning`` logger when it is imported, and
its lines also reach the root logger's handlers that Hydra's job logging set up: each INFO
line was printed twice. When the root logger has handlers, Lightning's is removed, so each
line is printed once, in the run's format, and lands in the run's log file.

Lightning also prints a few lines that are noise for this project: advertising tips
(``💡 Tip: ... litlogger``), ``weights_only was not set`` before every checkpoint (ours are
full training states on purpose), and warnings that contradict what the project does: the
``sync_dist=True`` advice for a val/loss the module already reduced over ranks, "could not
find the monitored key" / "dirpath has changed" on a resume (the best checkpoint is kept by
``BestCheckpoint``), "checkpoint directory exists and is not empty" (``run_folder`` decides
which run may write there), and a torch deprecation inside Lightning's own code. Each is
dropped by its exact wording; everything else goes through.
"""

from __future__ import annotations

import logging
import re
import warnings

# Lightning's INFO lines that are noise here (logged through lightning.pytorch.* loggers)
NOISE_LOG = re.compile(r"💡 Tip:|`weights_only` was not set|Trainer already configured with model summary")
NOISE_WARNINGS = (
    r"It is recommended to use `self\.log\('val/",  # val/loss is reduced by the module itself
    r"`ModelCheckpoint\(monitor='val/loss'\)` could not find the monitored key",  # a resume at an epoch's end
    r"The dirpath has changed from",  # BestCheckpoint keeps the best across folders
    r"Checkpoint directory .* exists and is not empty",  # run_folder.guard allows only a continuing run
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # inside Lightning, with this torch
    r"Precision .* is not supported by the model summary",  # ParameterSummary's line does not need it
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not NOISE_LOG.search(record.getMessage())


_FILTER = _DropNoise()


def install() -> None:
    """Install the filters (idempotent): on Lightning's loggers and in ``warnings``."""
    import lightning

    own = getattr(lightning, "_console", None)  # the handler lightning/__init__.py adds
    if own is not None and logging.getLogger().handlers:
        logging.getLogger("lightning").removeHandler(own)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.checkpoint_connector",
                 "lightning.pytorch.trainer.connectors.callback_connector", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for message in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
