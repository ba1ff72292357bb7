"""Webhook delivery latency on loopback: from an event's emit to its receiver having it.

    python -m bench.webhooks [--events 200] [--refuse-every 5]

A real app (``create_app``: SQLite store in a temp dir, its delivery worker, default
``webhooks`` settings but a 0.5 s first retry) serves on 127.0.0.1; a webhook is
registered through ``POST /api/v1/webhooks``; events are emitted through the outlet the
session service uses, so each one is stored, claimed, signed and POSTed to a receiver in
this process, which checks the signature. Rounds: a steady 100 events/s, a burst of all
at once, and the steady rate with every Nth event's first attempt answered 500 (those
arrive on the retry). Latency is emit start → receiver got it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from proctor.config import Config, load_config
from proctor.outbound.signing import verify_signature
from proctor.store.base import SessionRecord
from signaling.app import create_app
from signaling.keys import SESSIONS_KEY

API_KEY = "bench-webhooks-key"
STEADY_INTERVAL_SECONDS = 0.01  # 100 events/s
RETRY_SECONDS = 0.5


@dataclass
class Receiver:
    """Answers 500 to the first attempt of every ``refuse_every``-th event (0: never)."""

    secret: str = ""
    refuse_every: int = 0
    arrived: dict[int, float] = field(default_factory=dict)  # seq -> perf_counter
    attempts: int = 0
    bad_signatures: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0
    refused: set[int] = field(default_factory=set)

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        if not verify_signature(self.secret, request.headers, body):
            self.bad_signatures += 1
        seq = int(json.loads(body)["data"]["seq"])
        if self.refuse_every and seq % self.refuse_every == 0 and seq not in self.refused:
            self.refused.add(seq)
            return web.Response(status=500)
        self.arrived.setdefault(seq, time.perf_counter())
        if len(self.arrived) >= self.expected:
            self.done.set()
        return web.Response(status=204)

    def reset(self, secret: str, expected: int, refuse_every: int) -> None:
        self.secret, self.expected, self.refuse_every = secret, expected, refuse_every
        self.arrived, self.attempts, self.bad_signatures = {}, 0, 0
        self.refused = set()
        self.done = asyncio.Event()


def bench_config(data_dir: Path) -> Config:
    return load_config(env={}, overrides={
        "server": {"data_dir": str(data_dir)}, "auth": {"api_keys": [API_KEY]},
        "rtc": {"ice_host_addresses": ["127.0.0.1"], "max_sessions": 4},
        "store": f"sqlite:///{data_dir}/proctor.db", "clips": f"file://{data_dir}/clips",
        "webhooks": {"retry_initial_seconds": RETRY_SECONDS,
                     "allowed_networks": ["127.0.0.0/8"]},  # receivers on loopback
    })


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def run_round(app: web.Application, api: str, http: aiohttp.ClientSession,
                    receiver: Receiver, hook_url: str, events: int, burst: bool,
                    refuse_every: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with http.post(f"{api}/api/v1/webhooks", json={"url": hook_url},
                         headers=headers) as response:
        webhook = await response.json()
    receiver.reset(webhook["secret"], events, refuse_every)
    outlet = app[SESSIONS_KEY].outlet
    session = SessionRecord(session_id="bench", candidate_id="c", created_at="",
                            api_key_id="config")
    emitted: dict[int, float] = {}

    async def emit(seq: int) -> None:
        emitted[seq] = time.perf_counter()
        await outlet.emit("flag.opened", session, {"seq": seq, "flag": {"kind": "gaze_away"}})

    started = time.perf_counter()
    if burst:
        await asyncio.gather(*(emit(n) for n in range(events)))
    else:
        for n in range(events):
            await emit(n)
            await asyncio.sleep(STEADY_INTERVAL_SECONDS)
    await asyncio.wait_for(receiver.done.wait(), 60)
    elapsed = time.perf_counter() - started
    async with http.delete(f"{api}/api/v1/webhooks/{webhook['webhook_id']}", headers=headers):
        pass
    latencies = sorted((receiver.arrived[n] - emitted[n]) * 1000 for n in range(events))
    return {"latencies": latencies, "attempts": receiver.attempts, "elapsed": elapsed,
            "bad": receiver.bad_signatures}


def row(name: str, events: int, result: dict[str, Any]) -> str:
    lat = result["latencies"]
    p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
    return (f"| {name} | {events} | {result['attempts']} | {statistics.median(lat):.1f} | "
            f"{p95:.1f} | {lat[-1]:.1f} | {result['elapsed']:.2f} | {result['bad']} |")


async def main(events: int, refuse_every: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        app = create_app(bench_config(Path(tmp)))
        receiver = Receiver()
        sink = web.Application()
        sink.router.add_post("/hook", receiver.hook)
        app_runner, api = await serve(app)
        sink_runner, sink_url = await serve(sink)
        rounds = [("steady 100/s, all 2xx", False, 0), ("burst, all 2xx", True, 0)]
        if refuse_every:
            rounds.append((f"steady 100/s, every {refuse_every}th refused once "
                           f"(retry {RETRY_SECONDS:g} s)", False, refuse_every))
        try:
            async with aiohttp.ClientSession() as http:
                print("| round | events | attempts | p50 ms | p95 ms | max ms | round s "
                      "| bad signatures |")
                print("|---|---|---|---|---|---|---|---|")
                for name, burst, refuse in rounds:
                    result = await run_round(app, api, http, receiver, f"{sink_url}/hook",
                                             events, burst, refuse)
                    print(row(name, events, result), flush=True)
        finally:
            await app_runner.cleanup()
            await sink_runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--refuse-every", type=int, default=5,
                        help="refuse the first attempt of every Nth event (0: no such round)")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.refuse_every))
