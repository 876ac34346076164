"""Ctrl-C and SIGTERM that cannot be lost.

Python raises KeyboardInterrupt wherever the main thread happens to be; inside a garbage-collector
callback or a destructor that exception is printed and dropped, and the sweep would go on. So the
handler also records the request, and the training loop checks it at every epoch and before every
trial: a stop asked for is a stop done, within one epoch.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

_requested = threading.Event()


def _handler(signum: int, frame: Any) -> None:
    _requested.set()
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT and SIGTERM to a recorded KeyboardInterrupt (also when SIGINT was inherited as ignored)."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def check() -> None:
    """Raise KeyboardInterrupt if a stop was requested (even if the first one was swallowed)."""
    if _requested.is_set():
        raise KeyboardInterrupt


def requested() -> bool:
    return _requested.is_set()
