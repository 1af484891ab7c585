"""Lightning data modules: sliding-window pretraining text and instruction records."""

IGNORE_INDEX = -100  # a target the loss skips (torch cross-entropy's ignore_index)
