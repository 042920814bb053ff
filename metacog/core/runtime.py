"""Progress reporting and cooperative stopping, shared by every long stage.

A stage takes ``progress(done, total, message)`` and ``should_stop()`` callables; the CLI
passes a tqdm bar, the app passes ``st.progress`` and a stop button. A stage that is asked
to stop raises :class:`Stopped` after saving what it finished, so a re-run resumes.

Public entry: :func:`check_stop` (with the ``ProgressFn`` / ``StopFn`` types and :class:`Stopped`).
"""
from __future__ import annotations

from typing import Callable, Optional

ProgressFn = Callable[[int, int, str], None]
StopFn = Callable[[], bool]


class Stopped(RuntimeError):
    """Raised when a stage was asked to stop; finished work is saved and resumes."""


def check_stop(should_stop: Optional[StopFn]) -> None:
    """Raise :class:`Stopped` if ``should_stop`` (may be None) says to stop; call it between
    units of work, after the finished ones are saved.

    Raises:
        Stopped: when ``should_stop()`` is true."""
    if should_stop is not None and should_stop():
        raise Stopped("stopped on request; finished work is saved and a re-run resumes from it")


class TqdmProgress:
    """progress callable backed by tqdm (one bar per message)."""

    def __init__(self, disable: bool = False):
        self.bar = None
        self.msg = None
        self.disable = disable

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm.auto import tqdm

        if self.bar is None or message != self.msg:
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(total=total, desc=message, disable=self.disable, dynamic_ncols=True)
            self.msg = message
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        """Close the current bar (if any); the next call opens a new one."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def noop_progress(done: int, total: int, message: str = "") -> None:
    """A progress callable that ignores its arguments (``done``, ``total`` units, ``message``)."""
    return None
