"""Config groups of finetune.py only (its ``hydra.searchpath`` adds this folder).

``task/`` (``finetune.py task=classification``) lives here rather than in conf/ because
evaluate.py has a plain ``task`` key: Hydra would read ``evaluate.py task=hellaswag`` as a
choice of a ``task`` group if conf/ held one.
"""
