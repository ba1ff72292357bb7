"""One onnxruntime CPU session per model file in a process.

Every model here runs on the CPU with one inter-op thread and a few (usually one)
intra-op threads: the sessions share the worker pool's threads instead of each run
spreading over every core. ``InferenceSession.run`` is thread-safe, so one session per
model file serves every detector, session and thread; building a server's detectors
again (each app in a test process, ``proctor analyze``) then costs nothing.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any


def cpu_session(path: Path, intra_threads: int = 1) -> Any:
    """The process's ``onnxruntime.InferenceSession`` for this file and thread count."""
    stat = Path(path).stat()  # a rewritten file (size, time) gets a session of its own
    return _session(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, intra_threads)


@functools.lru_cache(maxsize=32)
def _session(path: str, size: int, mtime_ns: int, intra_threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
