"""Soak: N live sessions against one ``proctor serve`` for a long while; does anything creep?

    python -m bench.soak                       # 8 sessions, 10 minutes, a row a minute
    python -m bench.soak --sessions 4 --minutes 3

The same candidates as ``bench/load.py`` (real face video as VP8 and real speech as Opus,
pre-encoded, replayed in a loop, the scripted empty-room scenes raising flags) and one
proctor watching them all. Every minute it prints the server's memory (RSS of its process
tree), open file descriptors, asyncio tasks on its event loop (``proctor_asyncio_tasks``
from /metrics), threads, and the sessions' analysed frames and flags so far. A leak shows
as a column that keeps rising; the last line compares the final minute with the first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
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
                 http: aiohttp.ClientSession) -> Sample:
    pid = server.pid
    assert pid is not None
    metrics = await scrape_metrics(http, [server.url])  # it appends /metrics
    tasks = (metrics or {}).get("proctor_asyncio_tasks", {}).get(0.0)
    frames = 0
    for peer in peers:
        peer.last = await snapshot(peer, http, server.api_key)
        if peer.pipeline is not None:
            frames += int(peer.pipeline.get("frames_analysed", 0))
    return Sample(minute, tree_rss_mb(pid), open_fds(pid), tasks, thread_count(pid),
                  frames, len(watcher.flags))


def _cell(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_row(s: Sample) -> None:
    print(f"{s.minute:>6}  {_cell(s.rss_mb, '8.0f')}  {_cell(s.fds, '6d'):>6}  "
          f"{_cell(s.tasks, '6.0f'):>6}  {_cell(s.threads, '7d'):>7}  "
          f"{s.frames_analysed:>15}  {s.flags:>11}", flush=True)


def print_drift(first: Sample, last: Sample) -> None:
    def change(a: float | None, b: float | None, unit: str) -> str:
        return "n/a" if a is None or b is None else f"{b - a:+.0f}{unit}"

    print(f"drift minute {first.minute} -> {last.minute}: RSS "
          f"{change(first.rss_mb, last.rss_mb, ' MB')}, fds {change(first.fds, last.fds, '')}, "
          f"tasks {change(first.tasks, last.tasks, '')}, "
          f"threads {change(first.threads, last.threads, '')}")


async def soak(args: argparse.Namespace, workdir: Path) -> int:
    clips = prepare_media(workdir, audio=True, codec="vp8")
    server = ManagedServer(workdir, "server")
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
            print(" minute    RSS MB     fds   tasks  threads  frames analysed  flags (all)")
            samples = []
            started = time.monotonic()
            for minute in range(args.minutes + 1):
                await asyncio.sleep(max(0.0, started + minute * 60 - time.monotonic()))
                samples.append(await sample(minute, server, peers, watcher, http))
                print_row(samples[-1])
            # Minute 0 still holds start-up (models, first clips); drift counts from minute 1.
            print_drift(samples[min(1, len(samples) - 1)], samples[-1])
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
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="proctor-soak-") as tmp:
        return asyncio.run(soak(args, Path(tmp)))


if __name__ == "__main__":
    raise SystemExit(main())
