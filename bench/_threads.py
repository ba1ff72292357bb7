"""Per-thread CPU of the server process over a window, grouped by what the threads do.

``/proc/<pid>/task/<tid>/stat`` (utime + stime), ``.../schedstat`` (time spent runnable
but waiting for a core) and ``.../comm`` are read at the window's start and end. The
server's pools name their OS threads (``proctor/threads.py``: ``infer_0``, ``evidence_0``,
``transcribe_0``, ``transcribe-load_0``, ``jobs_0``) and native
threads a runtime starts from one of them inherit that name. One ``py-spy dump`` during
the window tells which tids are Python threads, with their Python names and stacks, so a
native thread (TFLite, onnxruntime, BLAS/OpenMP, CTranslate2 pools) is told apart from the
Python worker whose name it inherited, and aiortc's decoder threads (``decoder_worker``
in ``aiortc/rtcrtpreceiver.py``, Python names ``video-decoder`` / ``audio-decoder``) are
found although their kernel name is just ``python``. Without py-spy (absent, not root,
failed) the grouping falls back to kernel names alone and says so.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_THREAD_LINE = re.compile(r'^Thread (\d+|0x[0-9a-fA-F]+) \(([^)]*)\)(?:: "(.*)")?[ \t]*$', re.M)
PY_SPY_TIMEOUT = 15.0

EVENT_LOOP = "event loop (main thread)"
DETECTORS = "detector workers (infer_* python)"
EVIDENCE = "evidence encoders (evidence_*, incl. native)"
TRANSCRIPTION = "transcription (transcribe*, incl. native)"
VIDEO_DECODERS = "aiortc video decoders"
AUDIO_DECODERS = "aiortc audio decoders"
JOBS = "offline analysis jobs (jobs_*)"
OTHER_PYTHON = "other python threads"
EXITED = "threads exited in the window"
CHILDREN = "child processes"
ORDER = (EVENT_LOOP, DETECTORS, "native (from infer)", EVIDENCE, TRANSCRIPTION,
         VIDEO_DECODERS, AUDIO_DECODERS, JOBS)


@dataclass(frozen=True)
class TaskTimes:
    comm: str
    ticks: int  # utime + stime
    # Nanoseconds runnable but waiting for a core (schedstat's second field; 0 where the
    # kernel keeps no schedstats): CPU the thread wanted and did not get, which
    # ``ticks`` cannot show. A thread waiting for the GIL or for work sleeps instead.
    waiting_ns: int = 0


@dataclass(frozen=True)
class PyThread:
    name: str
    stack: str


@dataclass
class PySpyDump:
    """Python threads by OS tid, from one dump; ``error`` says why there are none."""

    threads: dict[int, PyThread] = field(default_factory=dict)
    alive: set[int] = field(default_factory=set)  # every tid of the process at dump time
    error: str | None = None
    text: str = ""
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0  # py-spy's own CPU (it is a reaped child of this process)


@dataclass(frozen=True)
class GroupRow:
    label: str
    threads: int
    cpu_seconds: float
    waiting_seconds: float | None = None  # runnable, waiting for a core (None: unknown)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def task_times(pid: int) -> dict[int, TaskTimes]:
    """utime + stime and kernel name of every thread of ``pid`` now."""
    found: dict[int, TaskTimes] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        stat, comm = _read(task / "stat"), _read(task / "comm")
        if stat is None or comm is None:
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(task.name)] = TaskTimes(comm.strip(), int(fields[11]) + int(fields[12]),
                                          _waiting_ns(task))
    return found


def _waiting_ns(task: Path) -> int:
    sched = (_read(task / "schedstat") or "").split()
    return int(sched[1]) if len(sched) >= 2 else 0


def process_ticks(pid: int) -> int | None:
    """utime + stime of the whole process, threads that already exited included."""
    stat = _read(Path(f"/proc/{pid}/stat"))
    if stat is None:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


# ---- py-spy ----------------------------------------------------------------------------


def py_spy_path() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def parse_dump(text: str) -> dict[int, PyThread]:
    """``Thread 12345 (idle): "MainThread"`` headers, each followed by its stack lines."""
    headers = list(_THREAD_LINE.finditer(text))
    threads: dict[int, PyThread] = {}
    for i, header in enumerate(headers):
        body_end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        if header.group(1).isdigit():  # hex would be a pthread id, not a tid
            stack = text[header.end() : body_end].strip()
            threads[int(header.group(1))] = PyThread(header.group(3) or "", stack)
    return threads


async def _run_py_spy(exe: str, pid: int, nonblocking: bool) -> tuple[int, str, str]:
    args = [exe, "dump", "--pid", str(pid), *(["--nonblocking"] if nonblocking else [])]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), PY_SPY_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "", f"timed out after {PY_SPY_TIMEOUT:.0f} s"
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def py_spy_dump(pid: int) -> PySpyDump:
    """One dump (``--nonblocking`` first, so the server is not paused); never raises."""
    exe = py_spy_path()
    if exe is None:
        return PySpyDump(error="py-spy not found")
    started, cpu0 = time.monotonic(), _children_cpu()
    dump = PySpyDump()
    for nonblocking in (True, False):
        try:
            rc, out, err = await _run_py_spy(exe, pid, nonblocking)
        except OSError as exc:
            rc, out, err = -1, "", str(exc)
        dump.threads = parse_dump(out) if rc == 0 else {}
        if dump.threads:
            dump.text, dump.error = out, None
            break
        dump.error = (err.strip().splitlines() or [f"exit {rc}, no threads"])[-1][:200]
    dump.alive = set(task_times(pid))
    dump.wall_seconds, dump.cpu_seconds = time.monotonic() - started, _children_cpu() - cpu0
    return dump


# ---- grouping --------------------------------------------------------------------------


def _family(comm: str) -> str:
    """``infer_1`` -> ``infer``, ``transcribe-load_0`` -> ``transcribe-load``,
    ``mediapipe/29206`` -> ``mediapipe``."""
    return re.sub(r"[_/]\d+$", "", comm)


def _python_group(tid: int, pid: int, thread: PyThread) -> str:
    if tid == pid:
        return EVENT_LOOP
    name = thread.name
    if "decoder_worker" in thread.stack or name.endswith("-decoder"):
        return AUDIO_DECODERS if name.startswith("audio") else VIDEO_DECODERS
    return _named_group(name) or OTHER_PYTHON


def _named_group(name: str) -> str | None:
    if name.startswith("infer"):
        return DETECTORS
    if name.startswith("evidence"):
        return EVIDENCE
    if name.startswith("transcribe"):
        return TRANSCRIPTION
    if name.startswith("jobs"):
        return JOBS
    return None


def _native_group(comm: str) -> str:
    group = _named_group(comm)
    if group in (EVIDENCE, TRANSCRIPTION):
        return group  # their native threads are counted with them
    return f"native (from {_family(comm)})"


def _unknown_group(tid: int, pid: int, comm: str) -> str:
    """Grouping by kernel name alone (no py-spy, or a thread born after the dump)."""
    if tid == pid:
        return EVENT_LOOP
    group = _named_group(comm)
    if group == DETECTORS:
        return "infer_* (python + native: no py-spy)"
    if group is not None:
        return group
    return f"'{_family(comm)}' threads (python or native: no py-spy)"


def group_of(tid: int, pid: int, comm: str, dump: PySpyDump | None) -> str:
    if dump is None or not dump.threads:
        return _unknown_group(tid, pid, comm)
    if tid in dump.threads:
        return _python_group(tid, pid, dump.threads[tid])
    if tid in dump.alive:
        return _native_group(comm)
    return f"started after the py-spy dump ('{_family(comm)}')"


@dataclass
class ThreadWindow:
    """What was read at the window's start and end, and the dump taken in between."""

    pid: int
    start: dict[int, TaskTimes]
    start_process: int | None
    end: dict[int, TaskTimes] = field(default_factory=dict)
    end_process: int | None = None
    dump: PySpyDump | None = None

    @classmethod
    def open(cls, pid: int) -> ThreadWindow:
        return cls(pid, task_times(pid), process_ticks(pid))

    def close(self) -> None:
        self.end, self.end_process = task_times(self.pid), process_ticks(self.pid)

    def groups(self, tree_cpu_seconds: float | None) -> list[GroupRow]:
        """CPU seconds per group over the window, in a stable order, largest others last."""
        cpu: dict[str, float] = {}
        waiting: dict[str, float] = {}
        count: dict[str, int] = {}
        for tid, now in self.end.items():
            before = self.start.get(tid)
            ticks = now.ticks - (before.ticks if before is not None else 0)
            waited = now.waiting_ns - (before.waiting_ns if before is not None else 0)
            label = group_of(tid, self.pid, now.comm, self.dump)
            cpu[label] = cpu.get(label, 0.0) + ticks / _TICKS
            waiting[label] = waiting.get(label, 0.0) + waited / 1e9
            count[label] = count.get(label, 0) + 1
        known = any(t.waiting_ns for t in self.end.values())
        rows = [GroupRow(label, count[label], cpu[label], waiting[label] if known else None)
                for label in cpu]
        rows.sort(key=lambda r: (ORDER.index(r.label) if r.label in ORDER else len(ORDER),
                                 -r.cpu_seconds))
        return rows + self._remainder(sum(cpu.values()), tree_cpu_seconds)

    def _remainder(self, threads_cpu: float, tree_cpu: float | None) -> list[GroupRow]:
        rows = []
        process_cpu = None
        if self.start_process is not None and self.end_process is not None:
            process_cpu = (self.end_process - self.start_process) / _TICKS
            exited = process_cpu - threads_cpu
            if exited > 0.5 / _TICKS:
                gone = len(set(self.start) - set(self.end))
                rows.append(GroupRow(EXITED, gone, exited))
        if tree_cpu is not None and process_cpu is not None and tree_cpu - process_cpu > 0.005:
            rows.append(GroupRow(CHILDREN, 0, tree_cpu - process_cpu))
        return rows

    def python_names(self) -> str:
        """The Python threads the dump saw, by name (``infer_0..1``-style summary)."""
        if self.dump is None or not self.dump.threads:
            return ""
        names = [t.name for t in self.dump.threads.values()]
        families: dict[str, int] = {}
        for name in names:
            families[_family(name)] = families.get(_family(name), 0) + 1
        return ", ".join(f"{fam}x{n}" if n > 1 else fam for fam, n in sorted(families.items()))
