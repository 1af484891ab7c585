"""Evaluation: perplexity, HellaSwag, LAMBADA, judged responses; a scoring core; what evaluate.py does (``job``)."""
