"""What every screen shares: a worker that fails is reported (log + notification) by the app's one
handler instead of taking the UI down, and polling waits for the screen to have drawn the last batch."""

from __future__ import annotations

import threading

from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker, WorkerState, get_current_worker

POLL_S = 0.5  # an engine at work: at most two refreshes a second, whatever it writes
IDLE_POLL_S = 2.0  # no engine alive: the file changes only when one starts, and a look costs one pragma
_SLICE_S = 0.25  # how soon a sleeping poller notices that its worker was cancelled


class BaseScreen(Screen):
    def __init__(self) -> None:
        super().__init__()
        self._drawn = threading.Event()  # set by the screen once it has applied the last poll
        self._drawn.set()
        self._sleep = threading.Event()  # never set: a sleep that is not a busy loop

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.app.report_worker_error(event.worker)  # type: ignore[attr-defined]

    def post_poll(self, message: Message) -> None:
        """From a polling worker: hand a batch to the screen, which sets `_drawn` once it has applied it."""
        self._drawn.clear()
        self.post_message(message)

    def wait_next_poll(self, interval: float = POLL_S) -> bool:
        """In a polling worker: sleep `interval`, then until the last batch posted is drawn (so a slow terminal
        never builds a queue of stale batches); False once the worker is cancelled."""
        worker = get_current_worker()
        for _ in range(max(1, round(interval / _SLICE_S))):
            if worker.is_cancelled:
                return False
            self._sleep.wait(_SLICE_S)
        while not self._drawn.wait(_SLICE_S):
            if worker.is_cancelled:
                return False
        return not worker.is_cancelled
