"""BestCheckpoint: the lowest-val/loss checkpoint, remembered across a resume into another folder.

Lightning's ModelCheckpoint forgets the best score when a run resumes from a checkpoint
written into another folder (``ckpt_path=<old run>/checkpoints/last.ckpt`` with a new
``hydra.run.dir``): it keeps only the path, so result.json said ``best n/a`` while the card,
drawn from the loss history, named the old best. Here the old best is kept (path and score)
as long as its file exists: a better validation writes a new best into this run's folder and,
as Lightning never deletes files outside it, the old run's file stays where it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint


class BestCheckpoint(ModelCheckpoint):
    @property
    def state_key(self) -> str:  # ModelCheckpoint's key: checkpoints written before this class still resume
        return "ModelCheckpoint" + super().state_key.removeprefix(type(self).__qualname__)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        moved = state_dict.get("dirpath", self.dirpath) != self.dirpath
        if not moved:
            return super().load_state_dict(state_dict)
        path, score = state_dict.get("best_model_path") or "", state_dict.get("best_model_score")
        if path and score is not None and Path(path).is_file():
            self.best_model_path, self.best_model_score = path, score
            self.best_k_models = {path: score}
            self.kth_best_model_path, self.kth_value = path, score
