"""One exception type for every mistake a user can fix by changing a value.

Entry points catch :class:`ConfigError` and print its message as a single line, so a
wrong key never ends in a traceback from deep inside torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable


class ConfigError(ValueError):
    """A value given by the user (config key, path, argument) that cannot work."""


def bad_value(key: str, value: object, expected: str) -> ConfigError:
    """Build the one-line message every validation uses: key, value, what would work."""
    return ConfigError(f"{key}={value!r} is invalid: {expected}")


def main_guard(fn: Callable[[], object]) -> object:
    """Run an entry point's job; a ConfigError becomes one line, never a traceback.

    A single run prints ``error: ...`` and exits with code 2. In a Hydra multirun the
    failed job writes its error into its result.json (so the sweep summary shows it) and
    the sweep goes on with the next job. Imports stay lazy so entry points start fast.
    """
    try:
        return fn()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            from .sweep import RESULT_FILE

            hc = HydraConfig.get()
            (Path(hc.runtime.output_dir) / RESULT_FILE).write_text(json.dumps(
                {"overrides": list(hc.overrides.task), "status": f"failed: {err}"}, indent=2))
            return None
        raise SystemExit(2) from None
