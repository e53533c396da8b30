"""Stop a training loop between steps on SIGINT / SIGTERM, so that it can checkpoint the step it finished.

Python's default SIGINT handler raises ``KeyboardInterrupt`` wherever the loop is — in the middle of a backward pass
or an optimiser step — and SIGTERM (what SLURM and most schedulers send before they kill a job) ends the process
outright. Either way the steps since the last periodic checkpoint are lost. :class:`SignalStop` replaces both
handlers for the duration of a ``with`` block by one that only records the request; the loop checks
:attr:`SignalStop.requested` after each step, saves and stops. A second signal while a request is pending raises
``KeyboardInterrupt`` at once (a loop that does not check, or a user who does not want to wait).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

#: The signals a :class:`SignalStop` takes over.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalStop:
    """A ``with`` block in which SIGINT and SIGTERM request a stop instead of ending the program.

    Args:
        enabled: take the signals over (signal handlers can be set from the main thread only; elsewhere, or with
            ``enabled=False``, the block changes nothing and :attr:`requested` stays False).
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalStop:
        if self.enabled and threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt(f"{signal.Signals(number).name} again: stopped at once")
        self.requested = True
        self.signal_name = signal.Signals(number).name
