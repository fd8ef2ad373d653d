"""Why a run stops early: a signal (SIGINT, SIGTERM) asking it to, or a loss that went non-finite."""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_DIVERGED = 1


def exit_code(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number (130, 143)."""
    return 128 + int(signum)


class Divergence(Exception):
    """A loss term became non-finite: the training loss at (1-based) ``epoch`` and ``step``, or
    the test loss after ``epoch`` (``after_epoch``: the weights its last step left are broken)."""

    def __init__(self, epoch: int, step: int, term: str, run_step: int, after_epoch: bool = False):
        self.epoch, self.step, self.term, self.run_step = epoch, step, term, run_step
        where = (
            f"the test loss is not finite after epoch {epoch}"
            if after_epoch
            else f"the loss is not finite at epoch {epoch}, step {step}"
        )
        super().__init__(f"the {term} term of {where}")


class StopRequests:
    """While entered: SIGINT and SIGTERM set ``signum`` instead of ending the process, so the loop
    can stop at the end of its current step; a second signal ends the process at once."""

    def __init__(self):
        self.signum = 0
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = self.signum or signum
        for handled in STOP_SIGNALS:  # the next one is not asked politely
            signal.signal(handled, signal.SIG_DFL)

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        return False
