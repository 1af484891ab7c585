"""Names of the files a run folder and a sweep folder hold (read by sweep.py and compare.py)."""

RESULT_FILE = "result.json"  # each run's numbers (pipeline.fit)
HISTORY_FILE = "history.json"  # each run's train/validation loss against tokens (callbacks.LossHistory)
PLOT_FILE = "compare.png"  # validation loss against tokens of every job of a sweep (compare.py)
