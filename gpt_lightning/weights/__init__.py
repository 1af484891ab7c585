"""Weights in and out: the Hugging Face / OpenAI layout (``hf_io``), where starting weights come from (``sources``, the ``init`` group), the export folder and its model card."""
