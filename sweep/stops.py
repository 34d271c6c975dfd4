"""Clean stops: Ctrl-C (SIGINT) and SIGTERM end a run or a sweep without a traceback. The signal
becomes an exception that unwinds through the training loop (which writes the run as
`interrupted`, metrics so far included), the search (which fails its running trials at once) and
Hydra's end-of-sweep callback (which writes summary.csv); the entry point then prints one line and
exits 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), as shells do."""

from __future__ import annotations

import os
import signal
import threading
import time


class Interrupted(KeyboardInterrupt):
    """A stop signal, raised where the program was; a KeyboardInterrupt, so `except Exception`
    blocks let it through."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


received: int | None = None  # the stop signal this process got, if any


def _raise(signum: int, frame: object) -> None:
    global received
    received = signum
    raise Interrupted(signum)


def install() -> None:
    """SIGTERM (what a scheduler or `kill` sends) unwinds like Ctrl-C, so finally-blocks run."""
    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGINT, _raise)


def exit_code(stop: BaseException) -> int:
    return 128 + getattr(stop, "signum", signal.SIGINT)


def describe(stop: BaseException) -> str:
    return signal.Signals(getattr(stop, "signum", signal.SIGINT)).name


SWEEPER_ENV = "SWEEP_SWEEPER_PID"  # the process that launches the jobs, set by the entry point


def mark_sweeper() -> None:
    """Record this process as the sweeper, for the jobs a launcher starts in worker processes."""
    os.environ.setdefault(SWEEPER_ENV, str(os.getpid()))


def watch_sweeper(period: float = 1.0) -> None:
    """In a launcher's worker process (joblib's loky workers are the sweeper's children): end this
    process when the sweeper is gone, so that no worker outlives it (a SIGKILLed sweeper cannot stop
    them) and goes on training trials whose study will fail them."""
    sweeper = int(os.environ.get(SWEEPER_ENV, "0"))
    if not sweeper or sweeper == os.getpid() or os.getppid() != sweeper:
        return

    def watch() -> None:
        while os.getppid() == sweeper:
            time.sleep(period)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="sweeper-watch", daemon=True).start()
