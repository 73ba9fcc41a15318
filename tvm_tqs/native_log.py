"""Keep TVM's C++ log lines (written straight to file descriptor 2) off the user's terminal.

TVM's native code logs warnings to fd 2 ("Warning: Fast mode segfaults when there are out-of-bounds
indices" for every Gather it lowers); Python's `warnings` and `logging` cannot reach them. While hidden,
fd 2 points at a temporary file and `sys.stderr` at a duplicate of the real stderr, so the CLI's own
messages and progress bars still show and only the native lines are kept aside (`NativeLog.text`).
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager


class NativeLog:
    """What native code wrote to fd 2 while hidden (empty when nothing was hidden)."""

    def __init__(self):
        self.text = ""


@contextmanager
def native_log_hidden(hidden: bool = True):
    """Within the block, fd 2 goes to a temporary file when `hidden`; yields a `NativeLog`."""
    log = NativeLog()
    if not hidden:
        yield log
        return
    sys.stderr.flush()
    real = os.dup(2)
    python_stderr = sys.stderr
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        sys.stderr = open(os.dup(real), "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
        try:
            yield log
        finally:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = python_stderr
            os.dup2(real, 2)
            os.close(real)
            sink.seek(0)
            log.text = sink.read().decode("utf-8", errors="replace")
