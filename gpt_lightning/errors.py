"""One exception type for every mistake a user can fix by changing a value.

Entry points catch :class:`ConfigError` and print its message as a single line, so a
wrong key never ends in a traceback from deep inside torch.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A value given by the user (config key, path, argument) that cannot work."""


def bad_value(key: str, value: object, expected: str) -> ConfigError:
    """Build the one-line message every validation uses: key, value, what would work."""
    return ConfigError(f"{key}={value!r} is invalid: {expected}")
