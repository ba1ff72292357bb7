"""Soak: N live sessions against one ``proctor serve`` for a long while; does anything creep?

    python -m bench.soak                       # 8 sessions, 10 minutes, a row a minute
    python -m bench.soak --sessions 4 --minutes 3
    python -m bench.soak --sessions 4 --minutes 4 --memory --tracemalloc
    python -m bench.soak --sessions 4 --minutes 4 --memory --env MALLOC_ARENA_MAX=2
    python -m bench.soak --sessions 4 --minutes 4 --memory --trim

The same candidates as ``bench/load.py`` (real face video as VP8 and real speech as Opus,
pre-encoded, replayed in a loop, the scripted empty-room scenes raising flags) and one
proctor watching them all. Every minute it prints the server's memory (RSS of its process
tree), open file descriptors, asyncio tasks on its event loop (``proctor_asyncio_tasks``
from /metrics), threads, and the sessions' analysed frames and flags so far. A leak shows
as a column that keeps rising; the last line compares the final minute with the first.

To tell *what* grows: ``--memory`` adds the server's resident memory split by mapping
(/proc/PID/smaps: the main malloc heap ``[heap]``, glibc's per-thread malloc arenas,
other anonymous mappings — big mmap'd blocks, Python's own arenas, thread stacks — and
file-backed pages: libraries, models), the speech queued for transcription (``speechq``:
under load transcription is deferred and speech waits, up to
``detectors.transcription.max_queue_seconds`` per session) and the load regulator's
degradation level (``proctor_degradation_level``: 1 defers transcription). ``--trim``
calls glibc's ``malloc_trim(0)`` in the server after each sample and shows what it
handed back (memory malloc held free: fragmentation, not live data; the next rows then
start from the trimmed state).
``--tracemalloc`` runs the server under :mod:`tracemalloc` (slower) and adds
the Python heap (everything allocated through Python's allocators, numpy arrays
included) with, at the end, the source lines whose allocations grew most from minute 1.
``--env KEY=VALUE`` sets a variable for the server (``MALLOC_ARENA_MAX=2``, any
``PROCTOR_...`` setting). Both probes run inside the server through a ``sitecustomize``
module on its PYTHONPATH, a thread that answers the bench over a file; nothing in the
server's own code changes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

if __package__:  # python -m bench.soak
    from .load import (
        HTTP_TIMEOUT,
        Link,
        ManagedServer,
        Peer,
        connect_peer,
        connect_watcher,
        create_session,
        end_peer,
        prepare_media,
        scrape_metrics,
        snapshot,
        tree_rss_mb,
    )
else:  # python bench/soak.py
    from load import (  # type: ignore[no-redef]
        HTTP_TIMEOUT,
        Link,
        ManagedServer,
        Peer,
        connect_peer,
        connect_watcher,
        create_session,
        end_peer,
        prepare_media,
        scrape_metrics,
        snapshot,
        tree_rss_mb,
    )


@dataclass(frozen=True)
class Sample:
    minute: int
    rss_mb: float | None
    fds: int | None
    tasks: float | None
    threads: int | None
    frames_analysed: int
    flags: int
    memory: dict[str, float] = field(default_factory=dict)  # --memory / --tracemalloc


# ---- memory probes (--memory, --tracemalloc) -----------------------------------------

# Loaded by the server's interpreter at start-up (sitecustomize on its PYTHONPATH). On
# each request file it malloc_trims (reporting RSS before and after) and, under
# tracemalloc, snapshots the Python heap, then writes the answer file.
PROBE = r'''
import ctypes, gc, json, os, threading, time, tracemalloc
from pathlib import Path

_DIR = Path(os.environ["SOAK_PROBE_DIR"])
_TRACE = os.environ.get("SOAK_PROBE_TRACEMALLOC") == "1"
_TRIM = os.environ.get("SOAK_PROBE_TRIM") == "1"
_LIBC = ctypes.CDLL("libc.so.6")


def _rss_mb():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _top(base, snap, limit=12):
    stats = snap.compare_to(base, "lineno")
    return [f"{s.size_diff / 2**20:+8.1f} MB {s.count_diff:+9d} blocks  {s.traceback[0]}"
            for s in stats[:limit]]


def _transcript_queue_mb():
    # Speech waiting for transcription (deferred under load), as the workers hold it.
    workers = [o for o in gc.get_objects() if type(o).__name__ == "TranscriptWorker"]
    return sum(w.stats()["queued_bytes"] for w in workers) / 2**20


def _serve():
    base = None
    while True:
        for request in sorted(_DIR.glob("req-*")):
            tag = request.name[4:]
            answer = {"transcript_queue": _transcript_queue_mb()}
            if _TRIM:
                answer["rss_before_trim"] = _rss_mb()
                _LIBC.malloc_trim(0)
                answer["rss_after_trim"] = _rss_mb()
            if _TRACE:
                current, peak = tracemalloc.get_traced_memory()
                answer["python_heap"] = current / 2**20
                snap = tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(False, tracemalloc.__file__)])
                if tag == "1":
                    base = snap
                elif base is not None:
                    answer["top"] = _top(base, snap)
            (_DIR / f"ans-{tag}").write_text(json.dumps(answer))
            request.unlink()
        time.sleep(0.2)


if _TRACE:
    tracemalloc.start(1)
threading.Thread(target=_serve, name="soak-probe", daemon=True).start()
'''

# A thread arena of glibc's malloc is a 64 MiB-aligned reservation (HEAP_MAX_SIZE).
_ARENA_ALIGN = 64 * 2**20


def memory_split(pid: int) -> dict[str, float]:
    """Resident MB of one process by kind of mapping (/proc/PID/smaps)."""
    split = {"heap": 0.0, "arenas": 0.0, "anon": 0.0, "files": 0.0}
    kind = "anon"
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        head = line.split()
        if "-" in head[0] and not head[0].endswith(":"):  # a mapping's header line
            start = int(head[0].split("-")[0], 16)
            name = head[5] if len(head) > 5 else ""
            if name == "[heap]":
                kind = "heap"
            elif name.startswith("/"):
                kind = "files"
            elif not name and start % _ARENA_ALIGN == 0:
                kind = "arenas"
            else:
                kind = "anon"
        elif head[0] == "Rss:":
            split[kind] += int(head[1]) / 1024
    return split


class Probe:
    """The bench's side of PROBE: ask, wait for the answer."""

    def __init__(self, workdir: Path, tracemalloc: bool, trim: bool) -> None:
        self.dir = workdir / "probe"
        self.dir.mkdir()
        (self.dir / "sitecustomize.py").write_text(PROBE)
        self.tracemalloc, self.trim = tracemalloc, trim

    def env(self) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(self.dir), os.environ.get("PYTHONPATH")) if p)
        return {"PYTHONPATH": path, "SOAK_PROBE_DIR": str(self.dir),
                "SOAK_PROBE_TRACEMALLOC": "1" if self.tracemalloc else "0",
                "SOAK_PROBE_TRIM": "1" if self.trim else "0"}

    async def ask(self, minute: int, timeout: float = 120.0) -> dict[str, object]:
        answer = self.dir / f"ans-{minute}"
        (self.dir / f"req-{minute}").write_text("")
        deadline = time.monotonic() + timeout  # a snapshot of a big heap takes a while
        while not answer.exists():
            if time.monotonic() > deadline:
                return {}
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.1)  # written in one call, but let it land
        return dict(json.loads(answer.read_text()))


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def thread_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


async def sample(minute: int, server: ManagedServer, peers: list[Peer], watcher: Link,
                 http: aiohttp.ClientSession, probe: Probe | None) -> Sample:
    pid = server.pid
    assert pid is not None
    memory: dict[str, float] = {}
    if probe is not None:
        memory = memory_split(pid)  # before any trim: what the RSS column shows
        answer = await probe.ask(minute)
        before, after = answer.get("rss_before_trim"), answer.get("rss_after_trim")
        if isinstance(before, float) and isinstance(after, float):
            memory["trimmed"] = before - after
        heap = answer.get("python_heap")
        if isinstance(heap, float):
            memory["python"] = heap
        queue = answer.get("transcript_queue")
        if isinstance(queue, float):
            memory["speechq"] = queue
        top = answer.get("top")
        if isinstance(top, list):
            memory_top[:] = [str(line) for line in top]
    metrics = await scrape_metrics(http, [server.url])  # it appends /metrics
    tasks = (metrics or {}).get("proctor_asyncio_tasks", {}).get(0.0)
    level = (metrics or {}).get("proctor_degradation_level", {}).get(0.0)
    if probe is not None and level is not None:
        memory["level"] = level
    frames = 0
    for peer in peers:
        peer.last = await snapshot(peer, http, server.api_key)
        if peer.pipeline is not None:
            frames += int(peer.pipeline.get("frames_analysed", 0))
    return Sample(minute, tree_rss_mb(pid), open_fds(pid), tasks, thread_count(pid),
                  frames, len(watcher.flags), memory)


memory_top: list[str] = []  # --tracemalloc: the lines that grew most since minute 1

MEMORY_COLUMNS = ("heap", "arenas", "anon", "files", "trimmed", "python", "speechq", "level")


def _cell(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_row(s: Sample) -> None:
    extra = "".join(f"  {_cell(s.memory.get(c), '7.0f'):>7}" for c in MEMORY_COLUMNS
                    if s.memory)
    print(f"{s.minute:>6}  {_cell(s.rss_mb, '8.0f')}  {_cell(s.fds, '6d'):>6}  "
          f"{_cell(s.tasks, '6.0f'):>6}  {_cell(s.threads, '7d'):>7}  "
          f"{s.frames_analysed:>15}  {s.flags:>11}{extra}", flush=True)


def print_drift(first: Sample, last: Sample) -> None:
    def change(a: float | None, b: float | None, unit: str) -> str:
        return "n/a" if a is None or b is None else f"{b - a:+.0f}{unit}"

    print(f"drift minute {first.minute} -> {last.minute}: RSS "
          f"{change(first.rss_mb, last.rss_mb, ' MB')}, fds {change(first.fds, last.fds, '')}, "
          f"tasks {change(first.tasks, last.tasks, '')}, "
          f"threads {change(first.threads, last.threads, '')}")


async def soak(args: argparse.Namespace, workdir: Path) -> int:
    clips = prepare_media(workdir, audio=True, codec="vp8")
    probing = args.memory or args.tracemalloc or args.trim
    probe = Probe(workdir, args.tracemalloc, args.trim) if probing else None
    env = dict(item.split("=", 1) for item in args.env)
    server = ManagedServer(workdir, "server", env={**env, **(probe.env() if probe else {})})
    server.start()
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        try:
            await server.wait_ready(http, 180)
            peers = [Peer(index=i, url=server.url) for i in range(args.sessions)]
            for peer in peers:
                await create_session(peer, http, server.api_key)
            watcher = Link()
            await connect_watcher(watcher, [p.session_id for p in peers], http, server.url,
                                  server.api_key, 30)
            for i, peer in enumerate(peers):
                await connect_peer(peer, http, clips, phase=i * 1.7, timeout=30)
            failed = [p.index for p in peers if p.failed]
            print(f"soak: {args.sessions} sessions ({len(failed)} failed to connect), "
                  f"{args.minutes} min, one watcher; server pid {server.pid}")
            memory_head = "".join(f"  {c:>7}" for c in MEMORY_COLUMNS) if probe else ""
            print(" minute    RSS MB     fds   tasks  threads  frames analysed  flags (all)"
                  + memory_head)
            samples = []
            started = time.monotonic()
            for minute in range(args.minutes + 1):
                await asyncio.sleep(max(0.0, started + minute * 60 - time.monotonic()))
                samples.append(await sample(minute, server, peers, watcher, http, probe))
                print_row(samples[-1])
            # Minute 0 still holds start-up (models, first clips); drift counts from minute 1.
            print_drift(samples[min(1, len(samples) - 1)], samples[-1])
            if memory_top:
                print("python heap growth since minute 1, by line (tracemalloc):")
                print("\n".join(f"  {line}" for line in memory_top))
            for peer in peers:
                await end_peer(peer, http, server.api_key)
                await peer.pc.close()
            await watcher.pc.close()
        finally:
            server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--memory", action="store_true",
                        help="split the server's memory by kind of mapping")
    parser.add_argument("--trim", action="store_true",
                        help="malloc_trim(0) in the server after each sample; show what it freed")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also trace the Python heap (slower server)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable for the server (repeatable)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="proctor-soak-") as tmp:
        return asyncio.run(soak(args, Path(tmp)))


if __name__ == "__main__":
    raise SystemExit(main())
