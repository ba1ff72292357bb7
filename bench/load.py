"""Load bench: N real WebRTC candidate peers streaming pre-encoded media to ``proctor serve``.

    python bench/load.py --sessions 1,4,8 --seconds 30
    python bench/load.py --sessions 4 --seconds 20 --server http://127.0.0.1:8080 --api-key K

Each peer is an aiortc RTCPeerConnection that sends a real face video (H.264, 640x480 at
15 fps, built once per run from scikit-image's photos, see ``bench/_media.py``) and real
speech (Opus, pyannote's two-speaker sample) without encoding anything per peer, opens the
``proctor`` DataChannel and counts the flags it receives. Without ``--server`` the bench
starts a fresh ``proctor serve`` on a free loopback port for every round, so one round's
figures never include another's; all traffic stays on 127.0.0.1.

Per round it prints the server's CPU per session (the server process and its children,
from /proc, over the streaming window), the analysis lag p50/p95 and frame counters (the
sessions' ``pipeline`` stats, else the Prometheus metrics), memory and flags received.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

if __package__:  # python -m bench.load
    from ._media import EncodedClip, LoopingTrack, build_media, load_clips
else:  # python bench/load.py: this folder is sys.path[0]
    from _media import EncodedClip, LoopingTrack, build_media, load_clips

REPO = Path(__file__).resolve().parent.parent
API = "/api/v1"
PYANNOTE_WHEEL = "pyannote.audio==4.0.7"
NA = "n/a"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=60)


def _loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"]


# aioice leaves 127.0.0.1 out when gathering; the bench peers offer only loopback so no
# packet leaves this machine (the server is told the same through its configuration).
aioice.ice.get_host_addresses = _loopback_only


# ---- the server process ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ManagedServer:
    """A ``proctor serve`` subprocess with its own data directory, stopped by :meth:`stop`."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = secrets.token_urlsafe(24)
        self.data = workdir / name
        self.data.mkdir(parents=True)
        self.log_path = workdir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        env = {
            **os.environ,
            "PROCTOR_RTC__ICE_HOST_ADDRESSES": "127.0.0.1",
            "PROCTOR_AUTH__API_KEYS": self.api_key,
            "PROCTOR_SERVER__DATA_DIR": str(self.data),
            "PROCTOR_STORE": f"sqlite:///{self.data / 'proctor.db'}",
            "PROCTOR_CLIPS": f"file://{self.data / 'clips'}",
        }
        cmd = [sys.executable, "-m", "proctor.cli", "serve",
               "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log,
                                          stderr=subprocess.STDOUT)

    async def wait_ready(self, http: aiohttp.ClientSession, timeout: float) -> None:
        """Poll /readyz (models loaded, store up) until it answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"server exited with {self._proc.returncode}\n{self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{self.url}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"server not ready after {timeout:.0f} s\n{self.log_tail()}")

    def stop(self) -> None:
        # SIGINT is aiohttp's graceful shutdown: live sessions are closed, clips finalised.
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# ---- /proc: CPU and memory of the server's process tree ---------------------------


_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields after "pid (comm) "


def _process_tree(root: int) -> list[int]:
    """``root`` and its descendants (worker processes count as the server's load)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_cpu_seconds(root: int) -> float | None:
    """User + system CPU of the tree (reaped children included through cutime/cstime)."""
    total = 0
    for pid in _process_tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return total / _TICKS if total else None


def tree_rss_mb(root: int) -> float | None:
    """Resident memory of the tree; shared pages of forked children count once per process."""
    total = 0
    for pid in _process_tree(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    return total / 2**20 if total else None


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent busy since boot (/proc/stat), to see who else ran."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICKS  # guest time is already inside user


def pid_listening_on(port: int) -> int | None:
    """The pid owning the listening TCP socket on ``port`` (for ``--server``), if visible."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
    return None


# ---- Prometheus metrics ------------------------------------------------------------


Samples = dict[str, dict[float, float]]  # name -> {le or 0: value summed over label sets}


async def scrape_metrics(http: aiohttp.ClientSession, url: str) -> Samples | None:
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        return None
    try:
        async with http.get(f"{url}/metrics") as resp:
            if resp.status != 200:
                return None
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            le = float(sample.labels.get("le", 0.0))
            bucket = samples.setdefault(sample.name, {})
            bucket[le] = bucket.get(le, 0.0) + sample.value
    return samples


def counter_delta(before: Samples | None, after: Samples | None, name: str) -> float | None:
    if after is None or name not in after:
        return None
    start = (before or {}).get(name, {}).get(0.0, 0.0)
    return after[name].get(0.0, 0.0) - start


def histogram_quantile(q: float, before: Samples | None, after: Samples | None,
                       name: str) -> float | None:
    """Prometheus' histogram_quantile over the buckets' growth between two scrapes."""
    if after is None or f"{name}_bucket" not in after:
        return None
    old = (before or {}).get(f"{name}_bucket", {})
    buckets = sorted((le, n - old.get(le, 0.0)) for le, n in after[f"{name}_bucket"].items())
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank, lower_le, lower_n = q * total, 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return lower_le  # beyond the last finite bucket: its bound is all we know
            return lower_le + (le - lower_le) * (rank - lower_n) / max(n - lower_n, 1e-9)
        lower_le, lower_n = le, n
    return None


# ---- one candidate peer ------------------------------------------------------------


@dataclass
class Peer:
    """A candidate: its session, peer connection, tracks and what reached it."""

    index: int
    session_id: str = ""
    token: str = ""
    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    tracks: list[LoopingTrack] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    failed: str | None = None
    flag_messages: int = 0
    flag_kinds: dict[str, str] = field(default_factory=dict)  # flag_id -> kind
    messages: int = 0
    pipeline: dict[str, Any] | None = None
    video_sent: int = 0  # frames sent when the window closed, beside the server's count
    end_seconds: float | None = None


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _post(http: aiohttp.ClientSession, url: str, token: str,
                body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(url, json=body, headers=_auth(token)) as resp:
        text = await resp.text()
        if resp.status >= 300:
            raise RuntimeError(f"POST {url} -> {resp.status}: {text[:300]}")
        return dict(json.loads(text))


def _on_message(peer: Peer, raw: str | bytes) -> None:
    peer.messages += 1
    with contextlib.suppress(ValueError, AttributeError):
        message = json.loads(raw)
        if message.get("type") == "flag":
            flag = message.get("flag", {})
            peer.flag_messages += 1
            peer.flag_kinds[str(flag.get("flag_id"))] = str(flag.get("kind"))


def _watch_state(peer: Peer) -> None:
    @peer.pc.on("connectionstatechange")
    def _changed() -> None:
        state = peer.pc.connectionState
        if state == "connected":
            peer.connected.set()
        elif state in ("failed", "closed") and not peer.connected.is_set():
            peer.failed = f"connection {state}"
            peer.connected.set()


def _add_tracks(peer: Peer, clips: list[EncodedClip], phase: float) -> None:
    for clip in clips:
        track = LoopingTrack(clip, phase)
        peer.tracks.append(track)
        transceiver = peer.pc.addTransceiver(track, direction="sendonly")
        if clip.kind == "video":
            # Only H.264 may be negotiated: the packets are H.264, nothing re-encodes them.
            codecs = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences(
                [c for c in codecs if c.mimeType.lower() == "video/h264"])


async def connect_peer(peer: Peer, http: aiohttp.ClientSession, url: str, api_key: str,
                       clips: list[EncodedClip], phase: float, timeout: float) -> None:
    """POST /sessions, offer (ICE gathered), answer, then wait for the connection."""
    created = await _post(http, f"{url}{API}/sessions", api_key,
                          {"candidate_id": f"bench-{peer.index}"})
    peer.session_id, peer.token = created["session_id"], created["candidate_token"]
    channel = peer.pc.createDataChannel("proctor")  # before the offer, as proctor.js does
    channel.on("message", lambda raw: _on_message(peer, raw))
    _add_tracks(peer, clips, phase)
    _watch_state(peer)
    await peer.pc.setLocalDescription(await peer.pc.createOffer())  # gathers ICE first
    local = peer.pc.localDescription
    answer = await _post(http, f"{url}{API}/sessions/{peer.session_id}/offer", peer.token,
                         {"sdp": local.sdp, "type": local.type})
    await peer.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    try:
        await asyncio.wait_for(peer.connected.wait(), timeout)
    except TimeoutError:
        peer.failed = f"not connected after {timeout:.0f} s"


async def fetch_pipeline(peer: Peer, http: aiohttp.ClientSession, url: str,
                         api_key: str) -> None:
    """The session's live ``pipeline`` stats, where the server exposes them."""
    peer.video_sent = sum(t.sent for t in peer.tracks if t.kind == "video")
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        async with http.get(f"{url}{API}/sessions/{peer.session_id}",
                            headers=_auth(api_key)) as resp:
            if resp.status == 200:
                stats = (await resp.json()).get("pipeline")
                peer.pipeline = stats if isinstance(stats, dict) else None


async def end_peer(peer: Peer, http: aiohttp.ClientSession, url: str, api_key: str) -> None:
    """POST /end (the report is built then: timed), then close the connection."""
    if peer.session_id:
        started = time.monotonic()
        with contextlib.suppress(RuntimeError, aiohttp.ClientError, TimeoutError):
            await _post(http, f"{url}{API}/sessions/{peer.session_id}/end", api_key, {})
            peer.end_seconds = time.monotonic() - started
    await asyncio.sleep(0.5)  # flags closed by /end reach the DataChannel before it closes
    await peer.pc.close()


# ---- a round -----------------------------------------------------------------------


@dataclass
class Target:
    """The server a round talks to and the process whose CPU and memory it reads."""

    url: str
    api_key: str
    pid: int | None


@dataclass
class RoundResult:
    sessions: int
    seconds: float
    connected: int
    cpu_seconds: float | None
    client_cpu_seconds: float
    machine_cpu_seconds: float | None  # every process on the machine, same window
    rss_idle_mb: float | None
    rss_end_mb: float | None
    before: Samples | None
    after: Samples | None
    peers: list[Peer]
    errors: list[str]


def _cpu(target: Target) -> float | None:
    return None if target.pid is None else tree_cpu_seconds(target.pid)


def _rss(target: Target) -> float | None:
    return None if target.pid is None else tree_rss_mb(target.pid)


async def run_round(n: int, seconds: float, target: Target, clips: list[EncodedClip],
                    http: aiohttp.ClientSession, connect_timeout: float) -> RoundResult:
    rss_idle = _rss(target)
    before = await scrape_metrics(http, target.url)
    peers = [Peer(i) for i in range(n)]
    try:
        errors = await _connect_all(peers, http, target, clips, connect_timeout)
        live = [p for p in peers if p.connected.is_set() and p.failed is None]
        cpu0, wall0, client0 = _cpu(target), time.monotonic(), time.process_time()
        busy0 = machine_busy_seconds()
        await asyncio.sleep(seconds if live else 0)  # nothing to measure without a peer
        cpu1, wall1, client1 = _cpu(target), time.monotonic(), time.process_time()
        busy1 = machine_busy_seconds()
        await asyncio.gather(*(fetch_pipeline(p, http, target.url, target.api_key)
                               for p in live))
        after = await scrape_metrics(http, target.url)
        rss_end = _rss(target)
    finally:
        await asyncio.gather(*(end_peer(p, http, target.url, target.api_key) for p in peers),
                             return_exceptions=True)
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    busy = None if busy0 is None or busy1 is None else busy1 - busy0
    return RoundResult(n, wall1 - wall0, len(live), cpu, client1 - client0, busy, rss_idle,
                       rss_end, before, after, peers, errors)


async def _connect_all(peers: list[Peer], http: aiohttp.ClientSession, target: Target,
                       clips: list[EncodedClip], timeout: float) -> list[str]:
    # Peers start at evenly spread points of the loop, as candidates join at random times.
    jobs = [connect_peer(p, http, target.url, target.api_key, clips, p.index / len(peers),
                         timeout) for p in peers]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    errors = [f"peer {p.index}: {r!r}" for p, r in zip(peers, results, strict=True)
              if isinstance(r, BaseException)]
    errors += [f"peer {p.index}: {p.failed}" for p in peers if p.failed]
    return errors


# ---- report ------------------------------------------------------------------------


COLUMNS = ("sessions", "cpu/session", "lag p50", "lag p95", "frames recv", "analysed",
           "dropped", "rss MB", "MB/session", "flags", "end s", "client cpu", "other cpu")


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return NA if value is None else f"{value:{spec}}{unit}"


def _pipeline_values(peers: list[Peer], key: str) -> list[float]:
    return [float(p.pipeline[key]) for p in peers
            if p.pipeline is not None and p.pipeline.get(key) is not None]


def _frames(result: RoundResult, key: str, metric: str) -> float | None:
    values = _pipeline_values(result.peers, key)
    if values:
        return sum(values)
    return counter_delta(result.before, result.after, metric)


def _lag(result: RoundResult, key: str, q: float) -> float | None:
    """Per-session stats when present (p50: median of sessions, p95: worst session)."""
    values = _pipeline_values(result.peers, key)
    if values:
        return statistics.median(values) if q == 0.5 else max(values)
    return histogram_quantile(q, result.before, result.after, "proctor_analysis_lag_seconds")


def summary_row(r: RoundResult) -> list[str]:
    n = r.connected
    cpu = None if r.cpu_seconds is None or not n else 100 * r.cpu_seconds / r.seconds / n
    growth = (None if r.rss_end_mb is None or r.rss_idle_mb is None or not n
              else (r.rss_end_mb - r.rss_idle_mb) / n)
    ends = [p.end_seconds for p in r.peers if p.end_seconds is not None]
    return [
        f"{r.connected}/{r.sessions}",
        _fmt(cpu, ".1f", "%"),
        _fmt(_lag(r, "analysis_lag_p50", 0.5), ".3f", " s"),
        _fmt(_lag(r, "analysis_lag_p95", 0.95), ".3f", " s"),
        _fmt(_frames(r, "frames_received", "proctor_frames_received_total"), ".0f"),
        _fmt(_frames(r, "frames_analysed", "proctor_frames_analysed_total"), ".0f"),
        _fmt(_frames(r, "frames_dropped", "proctor_frames_dropped_total"), ".0f"),
        _fmt(r.rss_end_mb, ".0f"),
        _fmt(growth, ".0f"),
        str(sum(p.flag_messages for p in r.peers)),
        _fmt(max(ends) if ends else None, ".2f"),
        _fmt(100 * r.client_cpu_seconds / r.seconds if r.seconds > 0.5 else None, ".1f", "%"),
        _fmt(_other_cpu(r), ".1f", "%"),
    ]


def _other_cpu(r: RoundResult) -> float | None:
    """CPU that neither the server nor this generator used in the window (100% = a core):
    anything well above zero means the machine was shared and the figures are noisy."""
    if r.machine_cpu_seconds is None or r.cpu_seconds is None or r.seconds < 0.5:
        return None
    other = r.machine_cpu_seconds - r.cpu_seconds - r.client_cpu_seconds
    return max(0.0, 100 * other / r.seconds)


def _kinds(peer: Peer) -> str:
    counts = Counter(peer.flag_kinds.values())
    return " ".join(f"{kind}x{n}" for kind, n in sorted(counts.items())) or "-"


def peer_rows(r: RoundResult) -> Iterator[list[str]]:
    for p in r.peers:
        stats = p.pipeline or {}
        yield [f"  #{p.index}", p.session_id[:12] or NA,
               _fmt(stats.get("analysis_lag_p50"), ".3f"),
               _fmt(stats.get("analysis_lag_p95"), ".3f"),
               _fmt(stats.get("frames_received"), "d"), _fmt(stats.get("frames_analysed"), "d"),
               _fmt(stats.get("frames_dropped"), "d"),
               _fmt(stats.get("audio_chunks_dropped"), "d"),
               _fmt(stats.get("evidence_frames_dropped"), "d"), str(p.video_sent),
               str(p.flag_messages), _kinds(p), p.failed or "ok"]


def _marginal_memory(results: list[RoundResult]) -> str:
    """Memory per added session between the smallest and largest round: unlike MB/session
    it leaves out what the first session loads once (models loaded lazily, caches)."""
    rounds = sorted((r for r in results if r.rss_end_mb is not None and r.connected),
                    key=lambda r: r.connected)
    if len(rounds) < 2 or rounds[-1].connected == rounds[0].connected:
        return "memory per added session: n/a (needs two rounds of different sizes)"
    low, high = rounds[0], rounds[-1]
    assert low.rss_end_mb is not None and high.rss_end_mb is not None
    per = (high.rss_end_mb - low.rss_end_mb) / (high.connected - low.connected)
    return f"memory per added session ({low.connected} -> {high.connected} rounds): {per:.0f} MB"


def _metrics_line(r: RoundResult) -> str:
    """The same figures from /metrics alone: the fallback, shown as a cross-check."""
    lag = "proctor_analysis_lag_seconds"
    p50 = histogram_quantile(0.5, r.before, r.after, lag)
    p95 = histogram_quantile(0.95, r.before, r.after, lag)
    counts = [counter_delta(r.before, r.after, f"proctor_frames_{k}_total")
              for k in ("received", "analysed", "dropped")]
    return (f"/metrics: lag p50 {_fmt(p50, '.3f')} p95 {_fmt(p95, '.3f')} (bucket estimates), "
            f"recv/analysed/dropped {'/'.join(_fmt(c, '.0f') for c in counts)}")


def print_table(header: tuple[str, ...] | list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    for row in [list(header), *rows]:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))


def print_results(results: list[RoundResult], args: argparse.Namespace, fresh: bool) -> None:
    print()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    server = "a fresh proctor serve per round" if fresh else f"external {args.server}"
    print(f"server: {server}; window {args.seconds:g} s per round after all peers connected")
    print_table(COLUMNS, [summary_row(r) for r in results])
    print("cpu/session: server process tree CPU over the window / connected sessions "
          "(100% = one core); lag p50 = median of the sessions' p50, p95 = worst session's "
          "p95; frames = sums over sessions (whole session, not just the window); "
          "rss MB at the window's end, MB/session = growth over the idle server "
          "(includes what the first session loads once); "
          "flags = flag messages received on the DataChannels; end s = slowest POST /end; "
          "client cpu = this load generator, all peers; other cpu = everything else on "
          f"the machine ({os.cpu_count()} cores) in the window.")
    print(_marginal_memory(results))
    if args.detail:
        for r in results:
            print(f"\n{r.sessions} sessions, per peer; {_metrics_line(r)}")
            print_table(["peer", "session", "p50", "p95", "recv", "analysed", "dropped",
                         "audio drop", "clip drop", "sent", "flag msgs", "flags opened",
                         "state"], list(peer_rows(r)))
    for r in results:
        other = _other_cpu(r)
        if other is not None and other > 25:
            print(f"note: [{r.sessions} sessions] other processes used {other:.0f}% of a core "
                  "during the window: the machine was shared, rerun on a quiet one")
        for error in r.errors:
            print(f"[{r.sessions} sessions] {error}")


# ---- media ---------------------------------------------------------------------------


def speech_wav() -> Path | None:
    """pyannote's real two-speaker sample, from the tests' cache or its wheel (pip download)."""
    cache = Path(os.environ.get("TEST_MEDIA_CACHE", Path.home() / ".cache" / "proctor-testdata"))
    wav = cache / "pyannote-sample" / "sample.wav"
    if wav.is_file():
        return wav
    wheels = cache / "wheels"
    found = sorted(wheels.glob("pyannote_audio-4.0.7-*.whl"))
    if not found:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                            str(wheels), PYANNOTE_WHEEL], capture_output=True, timeout=300)
        found = sorted(wheels.glob("pyannote_audio-4.0.7-*.whl"))
    if not found:
        return None
    wav.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(found[0]) as wheel:
        wav.write_bytes(wheel.read("pyannote/audio/sample/sample.wav"))
    return wav


def prepare_media(workdir: Path, audio: bool) -> list[EncodedClip]:
    speech = speech_wav() if audio else None
    if audio and speech is None:
        print("note: no speech sample available (pyannote.audio wheel); video only")
    started = time.monotonic()
    path = build_media(workdir / "bench.mp4", speech)
    clips = load_clips(path)
    kinds = ", ".join(f"{c.kind} {c.seconds:.1f} s loop" for c in clips)
    print(f"media: {path.name} ({path.stat().st_size / 2**20:.1f} MB; {kinds}), "
          f"built in {time.monotonic() - started:.1f} s")
    return clips


# ---- main ----------------------------------------------------------------------------


async def _managed_round(n: int, args: argparse.Namespace, workdir: Path,
                         clips: list[EncodedClip], http: aiohttp.ClientSession) -> RoundResult:
    server = ManagedServer(workdir, f"server-{n}")
    server.start()
    try:
        await server.wait_ready(http, args.startup_timeout)
        target = Target(server.url, server.api_key, server.pid)
        return await _bounded_round(n, args, target, clips, http)
    finally:
        server.stop()


async def _bounded_round(n: int, args: argparse.Namespace, target: Target,
                         clips: list[EncodedClip], http: aiohttp.ClientSession) -> RoundResult:
    print(f"round: {n} sessions for {args.seconds:g} s ...", flush=True)
    limit = args.seconds + args.connect_timeout + 120  # connect, stream, end: never hangs
    return await asyncio.wait_for(
        run_round(n, args.seconds, target, clips, http, args.connect_timeout), limit)


async def main_async(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="proctor-load-"))
    results: list[RoundResult] = []
    failed = 0
    try:
        clips = prepare_media(workdir, not args.no_audio)
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            for n in args.sessions:
                try:
                    if args.server:
                        result = await _bounded_round(n, args, _external(args), clips, http)
                    else:
                        result = await _managed_round(n, args, workdir, clips, http)
                except (RuntimeError, TimeoutError, aiohttp.ClientError) as exc:
                    failed += 1  # one broken round should not hide the others' figures
                    print(f"round {n} failed: {type(exc).__name__}: {exc}", flush=True)
                    continue
                results.append(result)
    finally:
        if results:
            print_results(results, args, fresh=not args.server)
        if args.keep:
            print(f"kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if not failed and all(r.connected == r.sessions for r in results) else 1


def _external(args: argparse.Namespace) -> Target:
    from urllib.parse import urlsplit

    pid = args.server_pid or pid_listening_on(urlsplit(args.server).port or 80)
    if pid is None:
        print("note: server pid not found (pass --server-pid): cpu and rss are n/a")
    return Target(args.server.rstrip("/"), args.api_key, pid)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="1,4,8",
                        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                        help="comma-separated session counts, one round each (default 1,4,8)")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="streaming window per round, after all peers connected")
    parser.add_argument("--server", help="use this running server instead of starting one")
    parser.add_argument("--api-key", help="integrator API key for --server")
    parser.add_argument("--server-pid", type=int,
                        help="pid of --server for CPU and memory (default: the port's owner)")
    parser.add_argument("--no-audio", action="store_true", help="send video only")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--startup-timeout", type=float, default=180.0,
                        help="seconds to wait for a started server's /readyz")
    parser.add_argument("--detail", action="store_true", help="also print one line per peer")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (media, server logs, data, clips)")
    args = parser.parse_args(argv)
    if args.server and not args.api_key:
        parser.error("--server needs --api-key")
    return args


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
