"""Accuracy and macro-F1 from a confusion matrix: what ``finetune.py task=classification``
logs during validation (train/classifier_module.py) and ``evaluate.py task=classification``
reports. One ``bincount`` gives the matrix, so no metrics library is needed; macro-F1 treats
an undefined class F1 as 0, as scikit-learn's ``zero_division=0`` does.
"""

from __future__ import annotations

import torch

from gpt_lightning.tokenizer import IGNORE_INDEX


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """(K, K) counts: row = true label, column = predicted label; ignored labels (-100) left out."""
    keep = labels != IGNORE_INDEX
    pred = logits.argmax(-1)[keep]
    flat = labels[keep] * num_labels + pred
    return torch.bincount(flat, minlength=num_labels * num_labels).view(num_labels, num_labels)


def scores(matrix: torch.Tensor) -> dict[str, float]:
    """Accuracy and macro-F1 of a confusion matrix (a class's F1 is 0 where it is undefined,
    as scikit-learn's ``zero_division=0``)."""
    m = matrix.double()
    tp = m.diag()
    predicted, actual = m.sum(0), m.sum(1)
    denominator = predicted + actual
    f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1e-12), torch.zeros_like(tp))
    total = m.sum()
    return {"accuracy": float(tp.sum() / total) if total > 0 else 0.0, "macro_f1": float(f1.mean())}
