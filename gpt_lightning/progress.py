"""A byte-counting progress bar on stderr that can be switched off (tests, non-zero ranks)."""

from __future__ import annotations

import contextlib
import sys


class _Silent:
    def update(self, n: int) -> None:
        pass


@contextlib.contextmanager
def byte_progress(total: int | None, desc: str, enabled: bool = True, initial: int = 0):
    if not enabled:
        yield _Silent()
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
              desc=desc, file=sys.stderr, leave=False) as bar:
        yield bar
