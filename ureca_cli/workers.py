"""Worker processes that never outlive the run that started them.

A stage's worker processes (``tree --jobs``, annotate's prepare workers) run ``worker_init(parent_pid)`` first:

- Ctrl-C is left to the parent (it reaches the whole foreground group; the parent stops the run);
- a worker exits when its parent dies, also by ``kill -9``: on Linux through ``prctl(PR_SET_PDEATHSIG)``
  (the kernel signals the worker the moment it loses its parent), and on every system through a watchdog thread
  that looks at the parent twice a second. Without them a killed run leaves its workers alive under init.

The kernel also sends the death signal when the *thread* that started the worker ends while the process lives
on (annotate starts its workers from image threads), so the signal's handler exits only when the parent process
is really gone.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DEATH_SIGNAL = signal.SIGUSR1 if hasattr(signal, "SIGUSR1") else None
WATCH_SECONDS = 0.5


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def worker_init(parent: int) -> None:
    """Initializer of a worker process whose parent is the process ``parent`` (its pid, taken in the parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker does not raise its parent's Terminated
    ppid = os.getppid()  # ``parent`` itself, or a fork server between us (Python 3.14's default start method)

    def orphaned() -> bool:
        return os.getppid() != ppid or not _alive(parent)

    if sys.platform.startswith("linux") and DEATH_SIGNAL is not None:
        try:
            import ctypes

            signal.signal(DEATH_SIGNAL, lambda *_: os._exit(1) if orphaned() else None)
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0)
        except (OSError, AttributeError, ValueError):
            pass  # the watchdog still stands
    if orphaned():  # the parent died before the death signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            if orphaned():
                os._exit(1)

    threading.Thread(target=watch, name="ureca-parent-watch", daemon=True).start()
