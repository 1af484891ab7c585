"""One exception type for every mistake a user can fix by changing a value.

Entry points catch :class:`ConfigError` and print its message as a single line, so a
wrong key never ends in a traceback from deep inside torch.
"""

from __future__ import annotations

import sys
from typing import Callable


class ConfigError(ValueError):
    """A value given by the user (config key, path, argument) that cannot work."""


def bad_value(key: str, value: object, expected: str) -> ConfigError:
    """Build the one-line message every validation uses: key, value, what would work."""
    return ConfigError(f"{key}={value!r} is invalid: {expected}")


def main_guard(fn: Callable[[], object], on_error: Callable[[ConfigError], bool] | None = None) -> object:
    """Run an entry point's job; a ConfigError becomes one line, never a traceback.

    The line ``error: ...`` goes to stderr on a line of its own (live progress bars are
    closed first), then the process exits with code 2, unless ``on_error(err)`` returns
    True (a Hydra multirun records the failed job and goes on with the next one).
    """
    try:
        return fn()
    except ConfigError as err:
        _close_progress_bars()
        print(f"error: {err}", file=sys.stderr, flush=True)
        if on_error is not None and on_error(err):
            return None
        raise SystemExit(2) from None


def _close_progress_bars() -> None:
    """End every live tqdm bar (ours and Lightning's), so the error starts a fresh line."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or []):
        try:
            bar.close()
        except Exception:  # a bar in a broken state must not hide the error
            pass
    sys.stdout.flush()
