"""serve.py: an OpenAI-compatible server with continuous batching (``job`` starts it, ``routes`` are the HTTP side)."""
