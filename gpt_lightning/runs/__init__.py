"""Run folders: their file names, the end-of-run report, comparisons of runs, the sweep summary."""
