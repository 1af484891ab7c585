"""Command-line adapters: the one module that knows Hydra (``hydra_adapter``)."""
