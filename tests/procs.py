"""Process checks shared by the stage tests: a killed run leaves no worker processes behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time


def workers_gone_after_kill(args: list[str], sig: int, ready, env: dict | None = None) -> None:
    """Start ``args``, wait until it has worker processes and ``ready()`` holds, send ``sig`` to the main process
    only; its workers must be gone (not left under init) within a few seconds."""
    import psutil

    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=env)
    workers: list = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            workers = psutil.Process(proc.pid).children(recursive=True)
            if len(workers) >= 2 and ready():
                break
            time.sleep(0.02)
        assert proc.poll() is None and len(workers) >= 2, "the run ended before it had workers"
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=5)
        assert not alive, f"workers outlived their parent: {[(p.pid, p.status()) for p in alive]}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

