"""Load bench: N real WebRTC candidate peers and one proctor watcher against ``proctor serve``.

    python bench/load.py                                  # rounds of 1, 8, 16, 24 sessions, 30 s
    python bench/load.py --sessions 1,2 --seconds 8 --detail        # a quick look
    python bench/load.py --codec h264                     # H.264 instead of VP8
    python bench/load.py --sessions 4 --seconds 20 --server http://127.0.0.1:8080 --api-key K
    python bench/load.py --nodes 2 --sessions 2,8 --seconds 20   # two nodes, one deployment
    python bench/load.py --server http://127.0.0.1:8080,http://127.0.0.1:8081 --api-key K \
        --server-pid P1,P2                                # a running two-node deployment

Each candidate is an aiortc RTCPeerConnection that sends what Chromium sends: a real face
video, VP8 640x480 at 15 fps (``--codec h264``: H.264 constrained baseline), built once
per run from scikit-image's photos (``bench/_media.py``), and real speech as Opus
(pyannote's two-speaker sample), replaying packets encoded once (no encoder per peer).
It opens the ``proctor`` DataChannel. Per round the bench also takes one proctor token
for all the round's sessions (``POST /proctor-tokens``) and opens ONE watcher peer
(``POST /watch/offer``, DataChannel ``alerts``, as ``static/proctor.js`` ``watch()``
does) before the candidates connect. Without ``--server`` every round gets a fresh
``proctor serve`` on a free loopback port, so one round's figures never include
another's; all traffic stays on 127.0.0.1.

``--nodes K`` (K >= 2) makes each round's server a deployment of K fresh nodes
(``bench/_nodes.py``): one PostgreSQL store (``--store``, default the machine's
``postgresql://postgres@127.0.0.1:5432/test``, in a schema ``bench_<hex>`` of the
round's own, dropped after it unless ``--keep``), one Redis bus (``--bus``, default
``redis://127.0.0.1:6379/0``), ``clips: store``, one token secret and API key, node ids
``node-1`` .. ``node-K``. ``--server URL1,URL2,...`` names the nodes of a running
deployment instead (``--server-pid P1,P2,...`` for their CPU). Session i is created and
offered on node i % K, which then holds its media; the watcher connects to the first
node, so the other nodes' flags reach it through Redis.

Printed per round, over the streaming window (``--seconds``, from the moment every peer
is connected):

* load: the server's CPU per session (process and children, /proc), analysis lag
  p50/p95 and frame counters (the sessions' ``pipeline`` stats, else /metrics), memory,
  the generator's own CPU and what else ran on the machine;
* acceptance: analysed fps per session (``frames_analysed`` growth over the window /
  the growth of the session's server media time, both from ``GET /sessions/{id}`` at the
  window's start and end), min and median over sessions; the worst session's lag p95;
  flag delivery delay on the candidates' channels and on the proctor's channel: for each
  flag's first message (its OPENED), arrival − (media time 0 + ``flag.start`` + the
  rule's first-level ``seconds`` from ``config.yaml``; 0 for instant kinds), where
  media time 0 is the wall time the peer's first media packet was sent (the server
  starts its clock at the first frame it receives, a few tens of ms later, so the delay
  is slightly overstated; ``--detail`` shows that skew against the server's
  ``media_time``); p50/p95/max and flag counts cover the flags opened from each
  session's start to the window's end; face_absent correctness: sessions whose
  face_absent flags opened in the window number the media script's (±1), and any
  other kinds seen (the speech is a two-speaker conversation, so ``multiple_speakers``
  is expected; anything else is probably a false flag); the load regulator's highest
  level in the window (``proctor_degradation_level``, polled every 2 s);
* a PASS/FAIL verdict: every admitted session connected (and the watcher), the regulator
  at level 0 all through the window (every rate as configured), min analysed fps ≥ 4.5,
  worst lag p95 < 0.25 s, flag delay p95 ≤ 1 s on both channels (with several nodes, also
  on the proctor's channel for the sessions held by other nodes than the watcher's).
  Offers a full node refuses (503 + Retry-After: ``rtc.max_sessions``) are admission
  working, not failures: the verdict counts them and judges the admitted sessions;
* with several nodes, per node: sessions offered to it and held by it (``GET
  /sessions/{id}`` ``node``), its CPU in all and per session it holds, memory, its
  sessions' analysed fps min/median and worst lag p95; and the flag delay on the
  candidates' channels and on the proctor's, split into sessions held by the watcher's
  node (same) and by the others (cross);
* the server's per-thread CPU split (``bench/_threads.py``: /proc task times at the
  window's start and end, one ``py-spy dump`` in the middle of the window to tell
  Python threads from native ones): event loop, detector workers, native model-runtime
  pools, evidence encoders, transcription, aiortc decoders, other; as a share of a core,
  of the server's total, and per session (one table per node with several).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import yaml
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

if __package__:  # python -m bench.load
    from ._media import (
        ABSENT_S,
        CODECS,
        CYCLE_S,
        EncodedClip,
        LoopingTrack,
        build_media,
        load_clips,
    )
    from ._nodes import (
        DEFAULT_BUS,
        DEFAULT_STORE,
        Deployment,
        Node,
        backends,
        check_database_url,
        drop_schema,
        identify_nodes,
        node_name,
    )
    from ._threads import GroupRow, PySpyDump, ThreadWindow, py_spy_dump
else:  # python bench/load.py: this folder is sys.path[0]
    from _media import ABSENT_S, CODECS, CYCLE_S, EncodedClip, LoopingTrack, build_media, load_clips
    from _nodes import (
        DEFAULT_BUS,
        DEFAULT_STORE,
        Deployment,
        Node,
        backends,
        check_database_url,
        drop_schema,
        identify_nodes,
        node_name,
    )
    from _threads import GroupRow, PySpyDump, ThreadWindow, py_spy_dump

REPO = Path(__file__).resolve().parent.parent
API = "/api/v1"
PYANNOTE_WHEEL = "pyannote.audio==4.0.7"
NA = "n/a"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=60)
MIME = {"vp8": "video/vp8", "h264": "video/h264", "opus": "audio/opus"}
DEFAULT_SESSIONS = "1,8,16,24"
# The acceptance bar each round is judged against.
MIN_ANALYSED_FPS = 4.5
MAX_LAG_P95 = 0.25
MAX_FLAG_DELAY_P95 = 1.0
SCRIPTED_KIND = "face_absent"  # what the bench media's no-face scenes should raise


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
    """A ``proctor serve`` subprocess with its own data directory, stopped by :meth:`stop`.
    Alone it keeps a SQLite store and clip folder there; ``env`` overrides any setting
    (a node of a deployment: the shared store, bus and secrets, its ``nodes.id``)."""

    def __init__(self, workdir: Path, name: str, api_key: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key or secrets.token_urlsafe(24)
        self.data = workdir / name
        self.data.mkdir(parents=True)
        self.log_path = workdir / f"{name}.log"
        self._env = env or {}
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
            # Every peer is admitted: the bench measures the load itself, also past the
            # limit `rtc.max_sessions: auto` would set (which /readyz reports).
            "PROCTOR_RTC__MAX_SESSIONS": "1000",
            **self._env,
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


async def _metrics_text(http: aiohttp.ClientSession, url: str) -> str | None:
    try:
        async with http.get(f"{url}/metrics") as resp:
            return await resp.text() if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def scrape_metrics(http: aiohttp.ClientSession, urls: list[str]) -> Samples | None:
    """Every node's /metrics, each sample summed over label sets and nodes (None when no
    node answered, or prometheus_client is missing)."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        return None
    texts = [t for t in await asyncio.gather(*(_metrics_text(http, u) for u in urls)) if t]
    if not texts:
        return None
    samples: Samples = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                le = float(sample.labels.get("le", 0.0))
                bucket = samples.setdefault(sample.name, {})
                bucket[le] = bucket.get(le, 0.0) + sample.value
    return samples


DEGRADATION_GAUGE = "proctor_degradation_level"
LEVEL_POLL_SECONDS = 2.0


def degradation_level(text: str) -> int | None:
    """The node's load-regulator level from its /metrics text (0: every rate as configured)."""
    for line in text.splitlines():
        if line.startswith(DEGRADATION_GAUGE + " "):
            return round(float(line.split()[1]))
    return None


async def watch_levels(http: aiohttp.ClientSession, urls: list[str],
                       seconds: float) -> list[int | None]:
    """Each node's highest degradation level over ``seconds``, polled every few seconds:
    a round the regulator degraded did not run every detector at its configured rate."""
    highest: list[int | None] = [None] * len(urls)
    deadline = time.monotonic() + seconds
    while True:
        texts = await asyncio.gather(*(_metrics_text(http, u) for u in urls))
        for i, text in enumerate(texts):
            level = None if text is None else degradation_level(text)
            if level is not None:
                highest[i] = max(level, highest[i] or 0)
        if time.monotonic() >= deadline:
            return highest
        await asyncio.sleep(min(LEVEL_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


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


# ---- flag rules ------------------------------------------------------------------------


def rule_seconds(path: Path = REPO / "config.yaml") -> dict[str, float]:
    """Each kind's first-level ``seconds`` from ``flags.rules`` (0 for instant kinds), the
    least a condition must last before the tracker opens the flag. The levels are
    ``low`` / ``moderate`` / ``high`` keys of a row, lowest first (proctor/flags/rules.py)."""
    try:
        rows = yaml.safe_load(path.read_text())["flags"]["rules"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        print(f"note: no flag rules from {path} ({exc}): flag delays count from flag.start")
        return {}
    seconds: dict[str, float] = {}
    for row in rows:
        levels = [row[s] for s in ("low", "moderate", "high") if isinstance(row.get(s), dict)]
        first = float(levels[0].get("seconds", 0.0)) if levels else 0.0
        seconds[str(row["kind"])] = 0.0 if row.get("instant") else first
    return seconds


# ---- DataChannel links: candidates and the proctor ------------------------------------


@dataclass(frozen=True)
class FlagSeen:
    """A flag's first message on a channel: its OPENED."""

    session_id: str
    kind: str
    start: float  # media seconds: the onset of the condition
    arrival: float  # wall time (time.time()) the message arrived


FlagLog = dict[str, FlagSeen]  # flag_id -> first sighting


def record_flag(log: FlagLog, raw: str | bytes, session_id: str | None) -> bool:
    """Note a flag message's first sighting; True when ``raw`` was a flag message.
    Anything else (status ticks, warnings, pongs) costs one substring test."""
    if not isinstance(raw, str) or '"flag"' not in raw:
        return False
    arrival = time.time()
    try:
        message = json.loads(raw)
    except ValueError:
        return False
    if not isinstance(message, dict) or message.get("type") != "flag":
        return False
    flag = message.get("flag") or {}
    flag_id = str(flag.get("flag_id"))
    if flag_id not in log:
        owner = session_id or str(message.get("session_id") or flag.get("session_id"))
        log[flag_id] = FlagSeen(owner, str(flag.get("kind")), float(flag.get("start") or 0.0),
                                arrival)
    return True


@dataclass(kw_only=True)
class Link:
    """A peer connection with one DataChannel and the flags that reached it."""

    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    failed: str | None = None
    messages: int = 0
    flag_messages: int = 0
    flags: FlagLog = field(default_factory=dict)

    def owner(self) -> str | None:
        """The session every flag on this channel belongs to (None: named per message)."""
        return None

    def on_message(self, raw: str | bytes) -> None:
        self.messages += 1
        if record_flag(self.flags, raw, self.owner()):
            self.flag_messages += 1

    def watch_state(self) -> None:
        @self.pc.on("connectionstatechange")
        def _changed() -> None:
            state = self.pc.connectionState
            if state == "connected":
                self.connected.set()
            elif state in ("failed", "closed") and not self.connected.is_set():
                self.failed = f"connection {state}"
                self.connected.set()


@dataclass(frozen=True)
class Snapshot:
    """``GET /sessions/{id}``: the pipeline stats, the server's media time and the node
    holding the session's media (``node``), at ``wall``."""

    pipeline: dict[str, Any] | None
    media_time: float | None
    wall: float  # midpoint of the request, time.time()
    node: str | None = None


@dataclass(kw_only=True)
class Peer(Link):
    """A candidate: its session, tracks, and its stats at the window's start and end.
    Its create, offer, stats and end all go to ``url``, one node of the deployment."""

    index: int
    url: str
    session_id: str = ""
    token: str = ""
    tracks: list[LoopingTrack] = field(default_factory=list)
    first: Snapshot | None = None
    last: Snapshot | None = None
    video_sent: int = 0  # frames sent when the window closed, beside the server's count
    end_seconds: float | None = None
    refused: AtCapacity | None = None  # the node was full: its offer got 503

    def owner(self) -> str | None:
        return self.session_id

    @property
    def pipeline(self) -> dict[str, Any] | None:
        return None if self.last is None else self.last.pipeline

    @property
    def media_node(self) -> str | None:
        """The node holding the session's media, as ``GET /sessions/{id}`` says."""
        return next((s.node for s in (self.last, self.first) if s is not None and s.node),
                    None)

    @property
    def origin(self) -> float | None:
        """Wall time of the session's media time 0: its first media packet sent."""
        sent = [t.first_sent for t in self.tracks if t.first_sent is not None]
        return min(sent) if sent else None

    @property
    def video_start(self) -> float:
        """Where in the clip's loop the video began (seconds)."""
        return next((t.start_seconds for t in self.tracks if t.kind == "video"), 0.0)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class AtCapacity(RuntimeError):
    """The node answered 503: it is full (``rtc.max_sessions``), which is admission
    working, not a failure to connect."""

    def __init__(self, url: str, retry_after: str | None, text: str) -> None:
        super().__init__(f"POST {url} -> 503 (Retry-After {retry_after}): {text[:200]}")
        self.retry_after = retry_after


async def _post(http: aiohttp.ClientSession, url: str, token: str,
                body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(url, json=body, headers=_auth(token)) as resp:
        text = await resp.text()
        if resp.status == 503:
            raise AtCapacity(url, resp.headers.get("Retry-After"), text)
        if resp.status >= 300:
            raise RuntimeError(f"POST {url} -> {resp.status}: {text[:300]}")
        return dict(json.loads(text))


def _add_tracks(peer: Peer, clips: list[EncodedClip], phase: float) -> None:
    for clip in clips:
        track = LoopingTrack(clip, phase)
        peer.tracks.append(track)
        transceiver = peer.pc.addTransceiver(track, direction="sendonly")
        # Only the clip's codec may be negotiated: nothing re-encodes the packets.
        mime = MIME[clip.codec]
        codecs = RTCRtpSender.getCapabilities(clip.kind).codecs
        transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() == mime])


async def _negotiate(link: Link, http: aiohttp.ClientSession, offer_url: str, token: str,
                     timeout: float) -> None:
    """Offer (ICE gathered), answer, then wait for the connection."""
    link.watch_state()
    await link.pc.setLocalDescription(await link.pc.createOffer())  # gathers ICE first
    local = link.pc.localDescription
    answer = await _post(http, offer_url, token, {"sdp": local.sdp, "type": local.type})
    await link.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    try:
        await asyncio.wait_for(link.connected.wait(), timeout)
    except TimeoutError:
        link.failed = f"not connected after {timeout:.0f} s"


async def create_session(peer: Peer, http: aiohttp.ClientSession, api_key: str) -> None:
    created = await _post(http, f"{peer.url}{API}/sessions", api_key,
                          {"candidate_id": f"bench-{peer.index}"})
    peer.session_id, peer.token = created["session_id"], created["candidate_token"]


async def connect_peer(peer: Peer, http: aiohttp.ClientSession, clips: list[EncodedClip],
                       phase: float, timeout: float) -> None:
    """DataChannel ``proctor`` (before the offer, as proctor.js does), tracks, offer."""
    channel = peer.pc.createDataChannel("proctor")
    channel.on("message", peer.on_message)
    _add_tracks(peer, clips, phase)
    await _negotiate(peer, http, f"{peer.url}{API}/sessions/{peer.session_id}/offer",
                     peer.token, timeout)


async def connect_watcher(watcher: Link, session_ids: list[str], http: aiohttp.ClientSession,
                          url: str, api_key: str, timeout: float) -> None:
    """One proctor token for all the sessions, then the ``alerts`` DataChannel, no media."""
    token = (await _post(http, f"{url}{API}/proctor-tokens", api_key,
                         {"sessions": session_ids}))["proctor_token"]
    channel = watcher.pc.createDataChannel("alerts")
    channel.on("message", watcher.on_message)
    await _negotiate(watcher, http, f"{url}{API}/watch/offer", token, timeout)


async def snapshot(peer: Peer, http: aiohttp.ClientSession, api_key: str) -> Snapshot | None:
    """The session's live ``pipeline`` stats, media time and media node, where the server
    has them."""
    peer.video_sent = sum(t.sent for t in peer.tracks if t.kind == "video")
    sent = time.time()
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        async with http.get(f"{peer.url}{API}/sessions/{peer.session_id}",
                            headers=_auth(api_key)) as resp:
            if resp.status == 200:
                body = await resp.json()
                stats, media, node = body.get("pipeline"), body.get("media_time"), body.get("node")
                return Snapshot(stats if isinstance(stats, dict) else None,
                                float(media) if isinstance(media, int | float) else None,
                                (sent + time.time()) / 2,
                                node if isinstance(node, str) else None)
    return None


async def end_peer(peer: Peer, http: aiohttp.ClientSession, api_key: str) -> None:
    """POST /end (the report is built then: timed), then close the connection."""
    if peer.session_id:
        started = time.monotonic()
        with contextlib.suppress(RuntimeError, aiohttp.ClientError, TimeoutError):
            await _post(http, f"{peer.url}{API}/sessions/{peer.session_id}/end", api_key, {})
            peer.end_seconds = time.monotonic() - started
    await asyncio.sleep(0.5)  # flags closed by /end reach the DataChannel before it closes
    await peer.pc.close()


# ---- a round -----------------------------------------------------------------------


@dataclass
class Target:
    """The deployment a round talks to: its nodes, whose processes' CPU and memory it
    reads (the proctor's watcher connects to the first), and their integrator API key.
    One node: a single server, as without ``--nodes``."""

    nodes: list[Node]
    api_key: str

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node_for(self, index: int) -> Node:
        """Round-robin: session ``index`` is created and offered on this node."""
        return self.nodes[index % len(self.nodes)]


PerNode = list[float | None]  # a figure per node of the round, in the Target's order


@dataclass
class Window:
    """The streaming window: wall times and the CPU figures read at its two ends."""

    seconds: float = 0.0
    start_wall: float = 0.0
    end_wall: float = 0.0
    node_cpu: PerNode = field(default_factory=list)  # each node's process tree
    client_cpu_seconds: float = 0.0
    machine_cpu_seconds: float | None = None  # every process on the machine
    threads: list[ThreadWindow | None] = field(default_factory=list)  # per node
    levels: list[int | None] = field(default_factory=list)  # per node: highest degradation

    @property
    def level(self) -> int | None:
        """The highest degradation level any node reached in the window."""
        known = [lv for lv in self.levels if lv is not None]
        return max(known) if known else None

    @property
    def cpu_seconds(self) -> float | None:
        """Server CPU, all nodes (n/a when any node's is)."""
        return _total(self.node_cpu)


@dataclass
class RoundResult:
    sessions: int
    connected: int
    window: Window
    nodes: list[Node]
    node_rss_idle: PerNode
    node_rss_end: PerNode
    before: Samples | None
    after: Samples | None
    peers: list[Peer]
    watcher: Link
    errors: list[str]

    @property
    def seconds(self) -> float:
        return self.window.seconds

    @property
    def multi_node(self) -> bool:
        return len(self.nodes) > 1

    @property
    def rss_idle_mb(self) -> float | None:
        return _total(self.node_rss_idle)

    @property
    def rss_end_mb(self) -> float | None:
        return _total(self.node_rss_end)

    @property
    def refused(self) -> list[Peer]:
        """Peers whose offer the node refused as full (503 + Retry-After)."""
        return [p for p in self.peers if p.refused is not None]

    def owned(self, node: Node) -> list[Peer]:
        """The sessions whose media ``node`` holds (GET /sessions/{id} ``node``)."""
        return [p for p in self.peers
                if p.last is not None and node.node_id and p.media_node == node.node_id]


def _total(values: PerNode) -> float | None:
    return _worst(values, sum)


def _node_cpu(target: Target) -> PerNode:
    return [None if n.pid is None else tree_cpu_seconds(n.pid) for n in target.nodes]


def _node_rss(target: Target) -> PerNode:
    return [None if n.pid is None else tree_rss_mb(n.pid) for n in target.nodes]


def _delta(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


async def _snapshots(peers: list[Peer], http: aiohttp.ClientSession,
                     api_key: str) -> list[Snapshot | None]:
    return list(await asyncio.gather(*(snapshot(p, http, api_key) for p in peers)))


async def _dump_later(pid: int, delay: float) -> PySpyDump:
    await asyncio.sleep(delay)
    return await py_spy_dump(pid)


async def _close_threads(threads: list[ThreadWindow | None],
                         dumps: list[asyncio.Task[PySpyDump] | None]) -> None:
    for window in threads:
        if window is not None:
            window.close()
    for window, dump in zip(threads, dumps, strict=True):
        if window is not None and dump is not None:
            window.dump = await dump


async def stream_window(live: list[Peer], seconds: float, target: Target,
                        http: aiohttp.ClientSession) -> Window:
    """Stats at the start, CPU counters, wait ``seconds`` (py-spy half-way, each node),
    CPU, stats."""
    for peer, snap in zip(live, await _snapshots(live, http, target.api_key), strict=True):
        peer.first = snap
    threads = [None if n.pid is None else ThreadWindow.open(n.pid) for n in target.nodes]
    cpu0, mono0, client0, busy0 = (_node_cpu(target), time.monotonic(), time.process_time(),
                                   machine_busy_seconds())
    wall0 = time.time()
    dumps = [None if t is None else asyncio.create_task(_dump_later(t.pid, seconds / 2))
             for t in threads]
    levels = await watch_levels(http, target.urls, seconds)
    cpu1, mono1, client1, busy1 = (_node_cpu(target), time.monotonic(), time.process_time(),
                                   machine_busy_seconds())
    window = Window(seconds=mono1 - mono0, start_wall=wall0, end_wall=time.time(),
                    node_cpu=[_delta(a, b) for a, b in zip(cpu0, cpu1, strict=True)],
                    client_cpu_seconds=client1 - client0,
                    machine_cpu_seconds=_delta(busy0, busy1), threads=threads, levels=levels)
    await _close_threads(threads, dumps)
    for peer, snap in zip(live, await _snapshots(live, http, target.api_key), strict=True):
        peer.last = snap
    return window


async def run_round(n: int, seconds: float, target: Target, clips: list[EncodedClip],
                    http: aiohttp.ClientSession, connect_timeout: float) -> RoundResult:
    rss_idle = _node_rss(target)
    # Several nodes: each is asked its node id, to tell which sessions it holds.
    errors = (await identify_nodes(http, target.nodes, target.api_key)
              if len(target.nodes) > 1 else [])
    before = await scrape_metrics(http, target.urls)
    peers = [Peer(index=i, url=target.node_for(i).url) for i in range(n)]
    watcher = Link()
    try:
        errors += await _connect_all(peers, watcher, http, target, clips, connect_timeout)
        live = [p for p in peers if p.connected.is_set() and p.failed is None]
        # Nothing to measure without a peer: an empty window.
        window = await stream_window(live, seconds, target, http) if live else Window()
        after = await scrape_metrics(http, target.urls)
        rss_end = _node_rss(target)
    finally:
        await asyncio.gather(*(end_peer(p, http, target.api_key) for p in peers),
                             return_exceptions=True)
        await watcher.pc.close()
    return RoundResult(n, len(live), window, target.nodes, rss_idle, rss_end, before, after,
                       peers, watcher, errors)


async def _connect_all(peers: list[Peer], watcher: Link, http: aiohttp.ClientSession,
                       target: Target, clips: list[EncodedClip], timeout: float) -> list[str]:
    """Sessions first (each on its own node), then the proctor's watcher on all of them
    (on the first node), then the candidates."""
    key = target.api_key
    created = await asyncio.gather(*(create_session(p, http, key) for p in peers),
                                   return_exceptions=True)
    errors = [f"peer {p.index}: {r!r}" for p, r in zip(peers, created, strict=True)
              if isinstance(r, BaseException)]
    ready = [p for p in peers if p.session_id]
    if ready:
        try:
            await connect_watcher(watcher, [p.session_id for p in ready], http,
                                  target.nodes[0].url, key, timeout)
        except (RuntimeError, aiohttp.ClientError, TimeoutError, KeyError) as exc:
            watcher.failed = repr(exc)
    # Peers start at evenly spread points of the loop, as candidates join at random times.
    jobs = [connect_peer(p, http, clips, p.index / len(peers), timeout) for p in ready]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for peer, result in zip(ready, results, strict=True):
        if isinstance(result, AtCapacity):
            peer.refused = result
        elif isinstance(result, BaseException):
            errors.append(f"peer {peer.index}: {result!r}")
    errors += [f"peer {p.index}: {p.failed}" for p in peers if p.failed]
    if watcher.failed:
        errors.append(f"proctor watcher: {watcher.failed}")
    return errors


# ---- flags: delay and correctness ------------------------------------------------------


def flag_delays(flags: Iterable[FlagSeen], origins: dict[str, float], rules: dict[str, float],
                until: float) -> list[float]:
    """Seconds each flag reached the channel after its rule's duration had run out:
    arrival - (media time 0 + flag.start + first-level seconds), flags up to ``until``."""
    return [f.arrival - (origins[f.session_id] + f.start + rules.get(f.kind, 0.0))
            for f in flags if f.session_id in origins and f.arrival <= until]


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile: the p95 of 10 values is the largest."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def expected_openings(video_start: float, w0: float, w1: float, need: float) -> int:
    """face_absent flags the media script opens within media time [w0, w1] for a peer whose
    video began ``video_start`` s into the loop: the last ABSENT_S s of each CYCLE_S loop
    show no face, and a flag opens ``need`` s into such a stretch."""
    count, k = 0, 0
    while (onset := k * CYCLE_S + CYCLE_S - ABSENT_S - video_start) <= w1:
        begin = max(onset, 0.0)  # a peer may start inside a no-face stretch
        if onset + ABSENT_S - begin >= need and w0 <= begin + need <= w1:
            count += 1
        k += 1
    return count


@dataclass(frozen=True)
class Scripted:
    """face_absent flags a session opened in the window, against the media's script."""

    seen: int
    expected: int

    @property
    def ok(self) -> bool:
        return abs(self.seen - self.expected) <= 1


def scripted_flags(peer: Peer, window: Window, rules: dict[str, float]) -> Scripted | None:
    origin = peer.origin
    if origin is None or window.seconds <= 0:
        return None
    need = rules.get(SCRIPTED_KIND, 0.0)
    w0, w1 = window.start_wall - origin, window.end_wall - origin
    seen = sum(1 for f in peer.flags.values()
               if f.kind == SCRIPTED_KIND and w0 <= f.start + need <= w1)
    return Scripted(seen, expected_openings(peer.video_start, w0, w1, need))


def analysed_fps(peer: Peer) -> float | None:
    """frames_analysed growth over the window / the server media time it spanned."""
    a, b = peer.first, peer.last
    if a is None or b is None or a.pipeline is None or b.pipeline is None:
        return None
    if a.media_time is None or b.media_time is None or b.media_time <= a.media_time:
        return None
    frames = b.pipeline.get("frames_analysed", 0) - a.pipeline.get("frames_analysed", 0)
    return float(frames) / (b.media_time - a.media_time)


def origin_skew(peer: Peer) -> float | None:
    """Server's media time 0 (from its media_time at the last GET) minus the client's
    estimate (first packet sent): by this much the flag delays are overstated."""
    snap, origin = peer.last, peer.origin
    if snap is None or snap.media_time is None or origin is None:
        return None
    return snap.wall - snap.media_time - origin


@dataclass(frozen=True)
class Acceptance:
    """What a round is judged on."""

    fps: list[float | None]  # per connected session
    lag_p95: list[float | None]
    candidate_delays: list[float]
    proctor_delays: list[float]
    scripted: list[Scripted]
    other_kinds: Counter[str]
    other_sessions: int
    # Several nodes: the proctor's flags of sessions whose media node is the watcher's
    # (same) or another one, through the bus (cross); None with one node.
    same_node_delays: list[float] | None = None
    cross_node_delays: list[float] | None = None


def acceptance(r: RoundResult, rules: dict[str, float]) -> Acceptance:
    live = [p for p in r.peers if p.last is not None]
    origins = {p.session_id: o for p in r.peers if (o := p.origin) is not None}
    until = r.window.end_wall
    candidate = [f for p in r.peers for f in p.flags.values()]
    others = [p for p in r.peers
              if any(f.kind != SCRIPTED_KIND and f.arrival <= until for f in p.flags.values())]
    same, cross = _by_media_node(r) if r.multi_node else (None, None)
    return Acceptance(
        fps=[analysed_fps(p) for p in live],
        lag_p95=lag_p95s(live),
        candidate_delays=flag_delays(candidate, origins, rules, until),
        proctor_delays=flag_delays(r.watcher.flags.values(), origins, rules, until),
        scripted=[s for p in live if (s := scripted_flags(p, r.window, rules)) is not None],
        other_kinds=Counter(f.kind for f in candidate
                            if f.kind != SCRIPTED_KIND and f.arrival <= until),
        other_sessions=len(others),
        same_node_delays=None if same is None else flag_delays(same, origins, rules, until),
        cross_node_delays=None if cross is None else flag_delays(cross, origins, rules, until),
    )


def lag_p95s(peers: list[Peer]) -> list[float | None]:
    return [(p.pipeline or {}).get("analysis_lag_p95") for p in peers]


def _by_media_node(r: RoundResult) -> tuple[list[FlagSeen], list[FlagSeen]]:
    """The proctor's flags of sessions held by the watcher's node, and by the others
    (a session whose media node is unknown is in neither; all are, with the watcher's)."""
    watcher_node = r.nodes[0].node_id
    if watcher_node is None:
        return [], []
    media = {p.session_id: p.media_node for p in r.peers}
    seen = [(f, media.get(f.session_id)) for f in r.watcher.flags.values()]
    return ([f for f, node in seen if node == watcher_node],
            [f for f, node in seen if node is not None and node != watcher_node])


def _worst(values: list[float | None], pick: Any) -> float | None:
    """``pick`` (min, max, sum) over the values, or None when any lacks the figure."""
    return None if not values or None in values else float(pick(values))


def _bar(name: str, value: float | None, ok: bool, bar: str, unit: str = "") -> str | None:
    if value is None:
        return f"{name} n/a"
    return None if ok else f"{name} {value:.3g}{unit} (bar {bar})"


def verdict(r: RoundResult, acc: Acceptance) -> str:
    problems: list[str | None] = []
    admitted = r.sessions - len(r.refused)
    if r.connected < admitted:
        problems.append(f"{r.connected}/{admitted} admitted sessions connected")
    level = r.window.level
    if level:
        problems.append(f"the load regulator degraded the node to level {level} "
                        f"({LEVELS[level]}): not every rate as configured")
    if not r.watcher.connected.is_set() or r.watcher.failed:
        problems.append("proctor watcher not connected")
    fps, lag = _worst(acc.fps, min), _worst(acc.lag_p95, max)
    problems += [
        _bar("min analysed fps", fps, fps is not None and fps >= MIN_ANALYSED_FPS,
             f">= {MIN_ANALYSED_FPS}"),
        _bar("worst lag p95", lag, lag is not None and lag < MAX_LAG_P95,
             f"< {MAX_LAG_P95}", " s"),
        _delay_bar("candidate", acc.candidate_delays),
        _delay_bar("proctor", acc.proctor_delays),
    ]
    if acc.cross_node_delays is not None:
        problems.append(_delay_bar("cross-node", acc.cross_node_delays))
    failed = [p for p in problems if p]
    judged = "FAIL: " + "; ".join(failed) if failed else "PASS"
    if r.refused:
        retry = r.refused[0].refused.retry_after if r.refused[0].refused else None
        judged += (f" ({len(r.refused)} of {r.sessions} offers refused at capacity: 503, "
                   f"Retry-After {retry} s; the figures are the {admitted} admitted)")
    return judged


LEVELS = {1: "transcription deferred", 2: "object passes halved", 3: "analysis rate cut"}


def _delay_bar(channel: str, delays: list[float]) -> str | None:
    p95 = quantile(delays, 0.95)
    return _bar(f"{channel} flag delay p95", p95, p95 is not None and p95 <= MAX_FLAG_DELAY_P95,
                f"<= {MAX_FLAG_DELAY_P95}", " s")


# ---- report ------------------------------------------------------------------------


COLUMNS = ("sessions", "cpu/session", "lag p50", "lag p95", "frames recv", "analysed",
           "dropped", "rss MB", "MB/session", "end s", "client cpu", "other cpu")
ACCEPTANCE = ("sessions", "fps min", "fps med", "lag p95 max", "cand flags", "cand p50",
              "cand p95", "cand max", "proc flags", "proc p50", "proc p95", "proc max",
              "face_absent ok", "level", "verdict")
THREAD_COLUMNS = ("group", "threads", "% of a core", "% of server", "per session",
                  "waiting for a core")
NODE_COLUMNS = ("sessions", "node", "offered", "owns", "cpu", "cpu/session", "rss MB",
                "fps min", "fps med", "lag p95 max")
DELIVERY_COLUMNS = ("sessions", "cand flags", "cand p50", "cand p95", "cand max",
                    "same flags", "same p50", "same p95", "same max", "cross flags",
                    "cross p50", "cross p95", "cross max")


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
    cpu = (None if r.window.cpu_seconds is None or not n or r.seconds < 0.5
           else 100 * r.window.cpu_seconds / r.seconds / n)
    growth = (None if r.rss_end_mb is None or r.rss_idle_mb is None or not n
              else (r.rss_end_mb - r.rss_idle_mb) / n)
    ends = [p.end_seconds for p in r.peers if p.end_seconds is not None]
    client = r.window.client_cpu_seconds
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
        _fmt(max(ends) if ends else None, ".2f"),
        _fmt(100 * client / r.seconds if r.seconds > 0.5 else None, ".1f", "%"),
        _fmt(_other_cpu(r), ".1f", "%"),
    ]


def _fps_cells(fps: list[float | None]) -> list[str]:
    """min (n/a when any session lacks the figure) and median analysed fps."""
    known = [f for f in fps if f is not None]
    return [_fmt(_worst(fps, min), ".2f"),
            _fmt(statistics.median(known) if known else None, ".2f")]


def _delay_cells(delays: list[float] | None) -> list[str]:
    """Flag count, delay p50, p95, max."""
    delays = delays or []
    return [str(len(delays)), _fmt(quantile(delays, 0.5), ".2f", " s"),
            _fmt(quantile(delays, 0.95), ".2f", " s"),
            _fmt(max(delays) if delays else None, ".2f", " s")]


def acceptance_row(r: RoundResult, acc: Acceptance) -> list[str]:
    ok = sum(s.ok for s in acc.scripted)
    return [f"{r.connected}/{r.sessions}", *_fps_cells(acc.fps),
            _fmt(_worst(acc.lag_p95, max), ".3f", " s"),
            *_delay_cells(acc.candidate_delays), *_delay_cells(acc.proctor_delays),
            f"{ok}/{len(acc.scripted)}", _fmt(r.window.level, "d"),
            verdict(r, acc).split(":")[0].split(" (")[0] + (" (full)" if r.refused else "")]


def node_rows(r: RoundResult) -> Iterator[list[str]]:
    """Per node: sessions offered to it and held by it, its CPU (100% = one core) in all
    and per session it holds, memory, and its sessions' analysed fps and worst lag."""
    for i, node in enumerate(r.nodes):
        owned = r.owned(node)
        cpu = _core_share(r.window.node_cpu[i] if r.window.node_cpu else None, r.seconds)
        per = None if cpu is None or not owned else cpu / len(owned)
        label = node.label + (" (watcher)" if i == 0 else "")
        yield [f"{r.connected}/{r.sessions}", label,
               str(sum(1 for p in r.peers if p.url == node.url)), str(len(owned)),
               _fmt(cpu, ".1f", "%"), _fmt(per, ".1f", "%"), _fmt(r.node_rss_end[i], ".0f"),
               *_fps_cells([analysed_fps(p) for p in owned]),
               _fmt(_worst(lag_p95s(owned), max), ".3f", " s")]


def _core_share(cpu_seconds: float | None, seconds: float) -> float | None:
    return None if cpu_seconds is None or seconds < 0.5 else 100 * cpu_seconds / seconds


def delivery_row(r: RoundResult, acc: Acceptance) -> list[str]:
    return [f"{r.connected}/{r.sessions}", *_delay_cells(acc.candidate_delays),
            *_delay_cells(acc.same_node_delays), *_delay_cells(acc.cross_node_delays)]


def _other_cpu(r: RoundResult) -> float | None:
    """CPU that neither the server nor this generator used in the window (100% = a core):
    anything well above zero means the machine was shared and the figures are noisy."""
    w = r.window
    if w.machine_cpu_seconds is None or w.cpu_seconds is None or w.seconds < 0.5:
        return None
    other = w.machine_cpu_seconds - w.cpu_seconds - w.client_cpu_seconds
    return max(0.0, 100 * other / w.seconds)


@dataclass(frozen=True)
class NodeThreads:
    """One node's thread window, its process tree's CPU and the sessions it served."""

    threads: ThreadWindow
    cpu_seconds: float | None
    sessions: int
    label: str  # "" with one node


def node_threads(r: RoundResult) -> Iterator[NodeThreads]:
    """Each node's thread window (with one node, its sessions are all connected ones)."""
    for i, threads in enumerate(r.window.threads):
        if threads is not None:
            node = r.nodes[i]
            sessions = len(r.owned(node)) if r.multi_node else r.connected
            yield NodeThreads(threads, r.window.node_cpu[i], sessions,
                              node.label if r.multi_node else "")


def thread_rows(t: NodeThreads, seconds: float) -> list[list[str]]:
    if seconds < 0.5:
        return []
    groups = t.threads.groups(t.cpu_seconds)
    whole = t.cpu_seconds if t.cpu_seconds else sum(g.cpu_seconds for g in groups)
    waits = [g.waiting_seconds for g in groups if g.waiting_seconds is not None]
    total = GroupRow("server total", sum(g.threads for g in groups), whole,
                     sum(waits) if waits else None)
    return [_thread_row(g, seconds, t.sessions, whole) for g in [*groups, total]]


def _thread_row(g: GroupRow, seconds: float, sessions: int, whole: float) -> list[str]:
    core = 100 * g.cpu_seconds / seconds
    return [g.label, str(g.threads) if g.threads else "", f"{core:.1f}%",
            _fmt(100 * g.cpu_seconds / whole if whole > 0 else None, ".1f", "%"),
            _fmt(core / sessions if sessions else None, ".1f", "%"),
            _fmt(None if g.waiting_seconds is None else 100 * g.waiting_seconds / seconds,
                 ".1f", "%")]


def _py_spy_line(threads: ThreadWindow) -> str:
    if threads.dump is None:
        return "py-spy: not run"
    dump = threads.dump
    if dump.error:
        return (f"py-spy: failed ({dump.error}): Python and native threads are told apart "
                "by kernel name only")
    return (f"py-spy dump half-way ({dump.wall_seconds:.2f} s, {dump.cpu_seconds:.2f} s CPU, "
            f"inside 'other cpu'); Python threads: {threads.python_names()}")


def _kinds(peer: Peer) -> str:
    counts = Counter(f.kind for f in peer.flags.values())
    return " ".join(f"{kind}x{n}" for kind, n in sorted(counts.items())) or "-"


def peer_rows(r: RoundResult, rules: dict[str, float]) -> Iterator[list[str]]:
    for p in r.peers:
        stats = p.pipeline or {}
        scripted = scripted_flags(p, r.window, rules)
        node = [p.media_node or NA] if r.multi_node else []
        yield [f"  #{p.index}", p.session_id[:12] or NA, *node,
               _fmt(stats.get("analysis_lag_p50"), ".3f"),
               _fmt(stats.get("analysis_lag_p95"), ".3f"),
               _fmt(analysed_fps(p), ".2f"),
               _fmt(stats.get("frames_received"), "d"), _fmt(stats.get("frames_analysed"), "d"),
               _fmt(stats.get("frames_dropped"), "d"),
               _fmt(stats.get("audio_chunks_dropped"), "d"),
               _fmt(stats.get("evidence_frames_dropped"), "d"), str(p.video_sent),
               _fmt(origin_skew(p), "+.3f"),
               NA if scripted is None else f"{scripted.seen}/{scripted.expected}",
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


def print_table(header: tuple[str, ...] | list[str], rows: list[list[str]],
                left: int = 0) -> None:
    """Columns right-aligned, the first ``left`` ones left-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    for row in [list(header), *rows]:
        print("  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))))


def _print_load(results: list[RoundResult]) -> None:
    print_table(COLUMNS, [summary_row(r) for r in results])
    print("cpu/session: server process tree CPU over the window / connected sessions "
          "(100% = one core); lag p50 = median of the sessions' p50, p95 = worst session's "
          "p95; frames = sums over sessions (whole session, not just the window); "
          "rss MB at the window's end, MB/session = growth over the idle server "
          "(includes what the first session loads once); end s = slowest POST /end; "
          "client cpu = this load generator, all peers and the watcher; other cpu = "
          f"everything else on the machine ({os.cpu_count()} cores) in the window.")
    print(_marginal_memory(results))


def _print_acceptance(results: list[RoundResult], accepted: list[Acceptance]) -> None:
    print()
    print_table(ACCEPTANCE, [acceptance_row(r, a) for r, a in zip(results, accepted,
                                                                  strict=True)])
    print("fps = frames_analysed growth over the window / the session's server media time "
          "over the same span (GET /sessions at the window's start and end); lag p95 max = "
          "worst session; cand/proc = flags opened on the candidates' channels / on the "
          "proctor's alerts channel from each session's start to the window's end, delay = "
          "arrival - (first packet sent + flag.start + the rule's first-level seconds); "
          f"face_absent ok = sessions whose {SCRIPTED_KIND} flags opened in the window "
          "number the media script's, ±1; t0 skew = the server's media time 0 (from its "
          "media_time) - the first packet sent: the delays are overstated by about this; "
          "level = the highest degradation level any node reported in the window (0: every "
          "rate as configured); (full) = the node refused some offers at capacity.")
    for r, acc in zip(results, accepted, strict=True):
        others = " ".join(f"{k}x{n}" for k, n in sorted(acc.other_kinds.items())) or "none"
        print(f"[{r.sessions} sessions] {verdict(r, acc)}")
        print(f"[{r.sessions} sessions] other flag kinds (to the window's end): {others}"
              + (f" in {acc.other_sessions} sessions" if acc.other_kinds else "")
              + f"; t0 skew median {_fmt(_median_skew(r), '+.3f', ' s')}")


def _median_skew(r: RoundResult) -> float | None:
    skews = [s for p in r.peers if (s := origin_skew(p)) is not None]
    return statistics.median(skews) if skews else None


def _print_threads(r: RoundResult) -> None:
    for t in node_threads(r):
        rows = thread_rows(t, r.seconds)
        if not rows:
            continue
        where = f", {t.label} ({t.sessions} held)" if t.label else ""
        per = "sessions it holds" if t.label else "connected sessions"
        print(f"\nserver threads, {r.sessions} sessions{where} ({r.seconds:.1f} s window; "
              f"100% = one core; per session = % of a core / {per}):")
        print_table(THREAD_COLUMNS, rows, left=1)
        print(_py_spy_line(t.threads))


def _print_nodes(results: list[RoundResult], accepted: list[Acceptance]) -> None:
    """Several nodes: what each node carried, and the proctor's flags by media node."""
    print()
    print_table(NODE_COLUMNS, [row for r in results for row in node_rows(r)], left=2)
    print("per node: offered = sessions created and offered there (round-robin), owns = "
          "sessions whose media it holds (GET /sessions/{id} node); cpu = its process tree "
          "over the window (100% = one core), cpu/session = cpu / sessions it holds; rss MB "
          "at the window's end; fps and lag over the sessions it holds.")
    print()
    print_table(DELIVERY_COLUMNS, [delivery_row(r, a) for r, a in zip(results, accepted,
                                                                      strict=True)])
    print("flag delay as in the acceptance table: cand = the candidates' channels; same / "
          "cross = the proctor's alerts channel (on the first node) for sessions whose "
          "media node is the watcher's / another node (the flag crossed the bus); the "
          f"verdict also needs cross p95 <= {MAX_FLAG_DELAY_P95} s.")


def _print_detail(r: RoundResult, rules: dict[str, float]) -> None:
    print(f"\n{r.sessions} sessions, per peer; {_metrics_line(r)}")
    node = ["media node"] if r.multi_node else []
    print_table(["peer", "session", *node, "p50", "p95", "fps", "recv", "analysed", "dropped",
                 "audio drop", "clip drop", "sent", "t0 skew", f"{SCRIPTED_KIND}",
                 "flag msgs", "flags opened", "state"], list(peer_rows(r, rules)))
    print(f"t0 skew = server's media time 0 - first packet sent (s): flag delays above are "
          f"overstated by about this; {SCRIPTED_KIND} = opened in the window / expected; "
          f"proctor channel: {r.watcher.messages} messages, {r.watcher.flag_messages} flag "
          f"messages, {len(r.watcher.flags)} flags")


def _server_line(args: argparse.Namespace, fresh: bool) -> str:
    if not fresh:
        return f"external {', '.join(args.server)}"
    if args.nodes == 1:
        return "a fresh proctor serve per round"
    return (f"a fresh deployment of {args.nodes} proctor serve nodes per round "
            f"({backends(args.store, args.bus)}); sessions round-robin over the nodes, "
            "the proctor's watcher on the first")


def print_results(results: list[RoundResult], args: argparse.Namespace, fresh: bool,
                  rules: dict[str, float]) -> None:
    print()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"server: {_server_line(args, fresh)}; {args.codec} + opus; window "
          f"{args.seconds:g} s per round after all peers connected")
    _print_load(results)
    accepted = [acceptance(r, rules) for r in results]
    _print_acceptance(results, accepted)
    if any(r.multi_node for r in results):
        _print_nodes(results, accepted)
    for r in results:
        _print_threads(r)
    if args.detail:
        for r in results:
            _print_detail(r, rules)
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


def prepare_media(workdir: Path, audio: bool, codec: str) -> list[EncodedClip]:
    speech = speech_wav() if audio else None
    if audio and speech is None:
        print("note: no speech sample available (pyannote.audio wheel); video only")
    started = time.monotonic()
    path = build_media(workdir, speech, codec)  # type: ignore[arg-type]  # argparse checked
    clips = load_clips(path)
    kinds = ", ".join(f"{c.kind} {c.codec} {c.seconds:.1f} s loop" for c in clips)
    print(f"media: {path.name} ({path.stat().st_size / 2**20:.1f} MB; {kinds}), "
          f"built in {time.monotonic() - started:.1f} s")
    return clips


# ---- main ----------------------------------------------------------------------------


async def _managed_round(n: int, args: argparse.Namespace, workdir: Path,
                         clips: list[EncodedClip], http: aiohttp.ClientSession) -> RoundResult:
    """A fresh server (or deployment of ``--nodes`` servers) for this round alone."""
    deployment = Deployment.new(args.store, args.bus) if args.nodes > 1 else None
    servers = _managed_servers(n, args.nodes, workdir, deployment)
    for server in servers:
        server.start()
    try:
        await asyncio.gather(*(s.wait_ready(http, args.startup_timeout) for s in servers))
        target = Target([Node(s.url, s.pid) for s in servers], servers[0].api_key)
        return await _bounded_round(n, args, target, clips, http)
    finally:
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers))
        if deployment is not None:
            await _finish_schema(deployment, args.keep)


def _managed_servers(n: int, nodes: int, workdir: Path,
                     deployment: Deployment | None) -> list[ManagedServer]:
    """One server (log ``server-N.log``), or the nodes of ``deployment``
    (``server-N-node-J.log``)."""
    if deployment is None:
        return [ManagedServer(workdir, f"server-{n}")]
    return [ManagedServer(workdir, f"server-{n}-{node_name(j)}", deployment.api_key,
                          deployment.env(j)) for j in range(nodes)]


async def _finish_schema(deployment: Deployment, keep: bool) -> None:
    if keep:
        print(f"kept: schema {deployment.schema} ({deployment.store})")
        return
    problem = await drop_schema(deployment)
    if problem:
        print(f"note: {problem}")


async def _bounded_round(n: int, args: argparse.Namespace, target: Target,
                         clips: list[EncodedClip], http: aiohttp.ClientSession) -> RoundResult:
    on = f" on {len(target.nodes)} nodes" if len(target.nodes) > 1 else ""
    print(f"round: {n} sessions{on} for {args.seconds:g} s ...", flush=True)
    limit = args.seconds + 2 * args.connect_timeout + 120  # connect, stream, end: never hangs
    return await asyncio.wait_for(
        run_round(n, args.seconds, target, clips, http, args.connect_timeout), limit)


async def main_async(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="proctor-load-"))
    results: list[RoundResult] = []
    rules = rule_seconds()
    failed = 0
    try:
        clips = prepare_media(workdir, not args.no_audio, args.codec)
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
                _keep_dump(result, workdir)
                results.append(result)
    finally:
        if results:
            print_results(results, args, fresh=not args.server, rules=rules)
        if args.keep:
            print(f"kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if not failed and all(r.connected == r.sessions for r in results) else 1


def _keep_dump(result: RoundResult, workdir: Path) -> None:
    """The round's py-spy dumps beside the server logs (kept with ``--keep``):
    ``py-spy-N.txt``, with several nodes ``py-spy-N-node-J.txt``."""
    for i, threads in enumerate(result.window.threads):
        if threads is not None and threads.dump is not None and threads.dump.text:
            node = f"-{node_name(i)}" if result.multi_node else ""
            (workdir / f"py-spy-{result.sessions}{node}.txt").write_text(threads.dump.text)


def _external(args: argparse.Namespace) -> Target:
    """The running deployment of ``--server``: its nodes, pids from ``--server-pid`` in
    the same order, else each port's owner."""
    pids = args.server_pid or []
    nodes = [_external_node(url, pids[i] if i < len(pids) else None, len(args.server) > 1)
             for i, url in enumerate(args.server)]
    return Target(nodes, args.api_key)


def _external_node(url: str, pid: int | None, several: bool) -> Node:
    from urllib.parse import urlsplit

    pid = pid or pid_listening_on(urlsplit(url).port or 80)
    if pid is None:
        which = f" of {url}" if several else ""
        print(f"note: server pid{which} not found (pass --server-pid): cpu, threads and rss "
              "are n/a")
    return Node(url.rstrip("/"), pid)


def _counts(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _urls(text: str) -> list[str]:
    return [u.strip() for u in text.split(",") if u.strip()]


def _pids(text: str) -> list[int | None]:
    """Comma-separated pids, in --server's order; an empty entry: look that one up."""
    return [int(x) if x.strip() else None for x in text.split(",")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default=_counts(DEFAULT_SESSIONS), type=_counts,
                        help="comma-separated session counts, one round each "
                             f"(default {DEFAULT_SESSIONS})")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="streaming window per round, after all peers connected")
    parser.add_argument("--codec", choices=CODECS, default="vp8",
                        help="video codec the peers send (default vp8, as Chromium does)")
    parser.add_argument("--nodes", type=int,
                        help="nodes of one deployment per round (default 1; 2 or more: "
                             "PostgreSQL store, Redis bus, clips: store, sessions "
                             "round-robin over the nodes, the watcher on the first)")
    parser.add_argument("--store",
                        help=f"PostgreSQL database for --nodes >= 2 (default {DEFAULT_STORE}); "
                             "each round gets a schema bench_<hex>, dropped after it "
                             "unless --keep")
    parser.add_argument("--bus", help=f"Redis for --nodes >= 2 (default {DEFAULT_BUS})")
    parser.add_argument("--server", type=_urls,
                        help="use this running server instead of starting one; several "
                             "comma-separated URLs: the nodes of one running deployment")
    parser.add_argument("--api-key", help="integrator API key for --server")
    parser.add_argument("--server-pid", type=_pids,
                        help="pid of --server for CPU and memory, comma-separated for "
                             "several nodes (default: each port's owner)")
    parser.add_argument("--no-audio", action="store_true", help="send video only")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--startup-timeout", type=float, default=180.0,
                        help="seconds to wait for a started server's /readyz")
    parser.add_argument("--detail", action="store_true", help="also print one line per peer")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (media, server logs, py-spy dumps, data, clips)")
    args = parser.parse_args(argv)
    if args.server and not args.api_key:
        parser.error("--server needs --api-key")
    _check_nodes(parser, args)
    return args


def _check_nodes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--nodes: the --server URLs' count, else 1; --store and --bus are for the managed
    nodes of a deployment only."""
    if args.server:
        if args.nodes not in (None, len(args.server)):
            parser.error(f"--nodes {args.nodes} but --server names {len(args.server)} nodes")
        if args.store or args.bus:
            parser.error("--store and --bus are for started nodes, not --server")
        if args.server_pid and len(args.server_pid) > len(args.server):
            parser.error("more --server-pid entries than --server nodes")
    if args.server:
        args.nodes = len(args.server)
    elif args.nodes is None:
        args.nodes = 1
    if args.nodes < 1:
        parser.error("--nodes must be 1 or more")
    if args.nodes == 1 and (args.store or args.bus):
        parser.error("--store and --bus need --nodes 2 or more")
    if args.store:
        try:
            check_database_url(args.store)
        except ValueError as exc:
            parser.error(f"--store: {exc}")
    args.store, args.bus = args.store or DEFAULT_STORE, args.bus or DEFAULT_BUS


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
