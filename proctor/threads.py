"""Named worker threads: Python's thread names made visible to the operating system.

Python keeps a thread's name to itself, so ``top -H``, ``/proc/<pid>/task/*/comm`` and
``bench/load.py``'s per-thread CPU table would see every thread as ``python``. Each pool
below sets its threads' kernel name (15 bytes at most) when they start. Native threads a
model runtime starts from one of them (onnxruntime, TFLite, CTranslate2 pools) inherit
that name, so their CPU is attributed to the pool that owns them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("proctor.threads")

_PR_SET_NAME = 15
_KERNEL_NAME_BYTES = 15
_libc: ctypes.CDLL | None = None


def _prctl() -> ctypes.CDLL | None:
    global _libc  # one handle per process; a cache, not shared state
    if _libc is None:
        path = ctypes.util.find_library("c")
        if path is None:
            return None
        _libc = ctypes.CDLL(path, use_errno=True)
    return _libc


def name_os_thread(name: str | None = None) -> None:
    """Give the calling thread's kernel name its Python name (or ``name``)."""
    label = (name or threading.current_thread().name)[:_KERNEL_NAME_BYTES]
    libc = _prctl()
    if libc is None:
        return
    try:
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(label.encode("ascii", "replace")), 0, 0, 0)
    except (AttributeError, OSError) as exc:  # not Linux: names stay Python's own
        log.debug("cannot name thread %s: %s", label, exc)


def named_pool(workers: int, prefix: str,
               initializer: Callable[[], None] | None = None) -> ThreadPoolExecutor:
    """A thread pool whose threads carry ``prefix`` in the kernel too (``prefix_0`` …)."""

    def start() -> None:
        name_os_thread()
        if initializer is not None:
            initializer()

    return ThreadPoolExecutor(workers, thread_name_prefix=prefix, initializer=start)
