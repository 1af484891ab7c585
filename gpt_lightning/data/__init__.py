"""Lightning data modules: sliding-window pretraining text and instruction records."""
