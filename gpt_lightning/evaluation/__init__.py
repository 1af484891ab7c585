"""Evaluation: perplexity, HellaSwag, LAMBADA, judged responses; a scoring core; a training callback."""
