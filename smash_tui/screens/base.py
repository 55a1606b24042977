"""What every screen shares: a worker that fails is reported (log + notification) by the app's one
handler instead of taking the UI down, and polling waits for the screen to have drawn the last batch."""

from __future__ import annotations

import threading

from textual.screen import Screen
from textual.worker import Worker, WorkerState, get_current_worker

POLL_S = 0.5  # at most two refreshes a second, whatever the engine writes


class BaseScreen(Screen):
    def __init__(self) -> None:
        super().__init__()
        self._drawn = threading.Event()  # set by the screen once it has applied the last poll
        self._drawn.set()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.app.report_worker_error(event.worker)  # type: ignore[attr-defined]

    def wait_next_poll(self) -> bool:
        """In a polling worker: sleep POLL_S, then until the last batch is drawn (so a slow terminal never
        builds a queue of stale batches); False once the worker is cancelled."""
        worker = get_current_worker()
        for _ in range(int(POLL_S / 0.1)):
            if worker.is_cancelled:
                return False
            threading.Event().wait(0.1)
        while not self._drawn.wait(0.1):
            if worker.is_cancelled:
                return False
        self._drawn.clear()
        return not worker.is_cancelled
