"""Progress bars for the command line: one tqdm bar per step on stderr, fed by the API's progress callback."""

from __future__ import annotations

import sys


class ProgressBars:
    """One tqdm bar per step on stderr (a step announced as ``(0, 1, what)`` shows its name and elapsed
    time); nothing when disabled (stderr not a terminal, unless forced). A context manager: closes the
    last bar."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.what = None

    def __call__(self, done: int, total: int, what: str) -> None:
        if not self.enabled:
            return
        if what != self.what:
            from tqdm import tqdm

            self.close()
            one_shot = done == 0 and total <= 1
            self.bar = tqdm(
                total=None if one_shot else total,
                desc=what,
                file=sys.stderr,
                dynamic_ncols=True,
                bar_format="{desc}: {elapsed}" if one_shot else None,
            )
            self.what = what
        if total > 1 and done != self.bar.n:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = self.what = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
