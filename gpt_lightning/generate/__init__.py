"""Generation: sampling and beam search with the KV cache, speculative decoding, inference loading, prompts, and what generate.py does (``job``)."""
