"""Configuration: the typed schema of every config group and the one strict parser (``schemas``)."""
