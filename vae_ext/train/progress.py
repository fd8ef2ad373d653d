"""Progress inside an epoch: a tqdm bar on a terminal, a plain line every few seconds otherwise
(a log file or a pipe), so a long epoch is never silent."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is in the [train] extra; without it every stream gets plain lines
        return None
    return tqdm


class Progress:
    """``start_epoch``, ``step`` after every optimizer step, ``end_epoch``.

    ``step`` takes a function that reads the current loss: reading it waits for the device, so it
    is only called when a value is about to be shown.
    """

    def __init__(self, enabled: bool, epochs: int, interval: float = 5.0, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.epochs = epochs
        self.interval = interval
        is_terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.tqdm = _tqdm() if enabled and is_terminal else None
        self.bar = None
        self.epoch = self.total = self.done = self.first = 0
        self.started = self.last_shown = 0.0

    def start_epoch(self, epoch: int, total: int, done: int = 0) -> None:
        """Epoch ``epoch`` (0-based) of ``total`` steps, ``done`` of them already (a resumed run)."""
        self.epoch, self.total, self.done, self.first = epoch, total, done, done
        self.started = self.last_shown = time.monotonic()
        if self.enabled and self.tqdm is not None:
            self.bar = self.tqdm(
                total=total,
                initial=done,
                desc=f"epoch {epoch + 1}/{self.epochs}",
                unit="step",
                file=self.stream,
                leave=False,
            )

    def step(self, read_loss: Callable[[], float]) -> None:
        if not self.enabled:
            return
        self.done += 1
        now = time.monotonic()
        if self.bar is not None:
            self.bar.update(1)
            if now - self.last_shown >= 0.5:
                self.last_shown = now
                self.bar.set_postfix_str(f"loss {read_loss():.4g}", refresh=False)
        elif now - self.last_shown >= self.interval:
            self.last_shown = now
            self._plain_line(read_loss(), now - self.started)

    def _plain_line(self, loss: float, elapsed: float) -> None:
        rate = (self.done - self.first) / max(elapsed, 1e-9)
        left = (self.total - self.done) / max(rate, 1e-9)
        print(
            f"epoch {self.epoch + 1}/{self.epochs}: step {self.done}/{self.total} "
            f"({100 * self.done / max(self.total, 1):.0f}%), loss {loss:.4g}, {rate:.3g} steps/s, "
            f"{left:.0f} s left in the epoch",
            file=self.stream,
            flush=True,
        )

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
