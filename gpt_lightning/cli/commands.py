"""The installed commands, one per job (``[project.scripts]`` in pyproject.toml):

    gpt-train, gpt-finetune, gpt-generate, gpt-serve, gpt-evaluate   Hydra jobs (cli/hydra_adapter.py)
    gpt-export SOURCE OUT                                            weights/export.py
    gpt-compare RUN_OR_SWEEP [...] [--out FILE]                      runs/compare.py

One command per job rather than one command with sub-commands: Hydra parses the whole command
line of a process against one primary config, so each job keeps ``--help``, ``--cfg job``,
``-m`` sweeps, ``--config-dir`` and shell completion exactly as ``python train.py`` has them.
"""

from __future__ import annotations

import sys

from gpt_lightning.cli.hydra_adapter import evaluate, finetune, generate, serve, train

__all__ = ["compare", "evaluate", "export", "finetune", "generate", "serve", "train"]


def export() -> None:
    from gpt_lightning.weights.export import main

    main(sys.argv[1:])


def compare() -> None:
    from gpt_lightning.runs.compare import main

    main(sys.argv[1:])
