"""Progress bars for the command line: one tqdm bar per step on stderr, fed by the API's progress callback."""

from __future__ import annotations

import sys


class ProgressBars:
    """One tqdm bar per step on stderr (a step announced as ``(0, 1, what)`` shows its name and elapsed
    time); nothing when disabled (stderr not a terminal, unless forced). A context manager: closes the
    last bar. With `interrupts`, every call first re-raises a Ctrl-C that was swallowed on its way up."""

    def __init__(self, enabled: bool, interrupts: Interrupts | None = None):
        self.enabled = enabled
        self.interrupts = interrupts
        self.bar = None
        self.what = None

    def __call__(self, done: int, total: int, what: str) -> None:
        if self.interrupts is not None:
            self.interrupts.check()  # stop at the next step after a Ctrl-C that TVM swallowed
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


class Interrupts:
    """Within the block, SIGINT raises KeyboardInterrupt as usual and is also remembered (`seen`).

    A KeyboardInterrupt raised inside a TVM callback comes back out of TVM as an ordinary error (a bare
    RuntimeError or a TVMError), which a fallback path may even catch; the CLI asks `seen` to exit 130
    anyway, and `check()` (called by `ProgressBars` at every step) stops the work that went on."""

    def __init__(self):
        self.seen = False
        self._previous = None

    def _handler(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.seen:
            raise KeyboardInterrupt

    def __enter__(self):
        import signal
        import threading

        self.seen = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False
