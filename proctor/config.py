"""One typed, frozen configuration tree.

Defaults live in ``config.yaml`` (shipped with the package); ``--config F`` merges a
file over them and ``PROCTOR_*`` environment variables override single keys, nested
keys joined by ``__``. This is the only module that reads the environment. Every
value is checked against its declared type on load, and a bad one raises
:class:`ConfigError` naming the key, so a typo stops start-up instead of a session.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

ENV_PREFIX = "PROCTOR_"
AUTO = "auto"
CLIPS_IN_STORE = "store"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config key '{key}': {problem}")
        self.key = key


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "data"
    max_body_bytes: int = 1_048_576
    max_upload_bytes: int = 536_870_912
    cors_origins: tuple[str, ...] = ()
    metrics_token: str = ""  # /metrics for non-loopback callers with this bearer; "": none
    shutdown_seconds: float = 30.0  # SIGTERM: live sessions end within this, or are cut short


@dataclass(frozen=True)
class AuthConfig:
    token_secret: str = ""
    token_seconds: int = 7200  # proctor tokens' lifetime
    token_ttl_seconds: int | None = None  # the older name of token_seconds: wins when set
    max_session_hours: float = 12.0  # candidate tokens' lifetime (ended sessions: refused)
    api_keys: tuple[str, ...] = ()  # config keys: tenant "default"

    @property
    def proctor_token_seconds(self) -> int:
        return self.token_seconds if self.token_ttl_seconds is None else self.token_ttl_seconds

    @property
    def candidate_token_seconds(self) -> int:
        return int(self.max_session_hours * 3600)


@dataclass(frozen=True)
class NodesConfig:
    """This node's place in a deployment (proctor/sessions/nodes.py)."""

    # Empty: "<hostname>:<server.port>", stable across restarts, so a node that comes
    # back after a crash finds (and finishes) the sessions it held.
    id: str = ""
    # The URL other nodes and operators reach this node at; empty: http://host:port.
    address: str = ""
    heartbeat_seconds: float = 5.0
    # A node silent this long is dead: a survivor marks its live sessions interrupted.
    dead_after_seconds: float = 15.0
    # How long a request routed to a session's owner node waits for its answer.
    request_timeout_seconds: float = 15.0

    def __post_init__(self) -> None:
        if self.dead_after_seconds <= self.heartbeat_seconds:
            raise ConfigError("nodes.dead_after_seconds",
                              "must be longer than nodes.heartbeat_seconds")


@dataclass(frozen=True)
class IceServer:
    urls: str
    username: str = ""
    credential: str = ""


@dataclass(frozen=True)
class RtcConfig:
    ice_host_addresses: tuple[str, ...] = ()
    ice_servers: tuple[IceServer, ...] = ()
    # Live sessions this node admits; None is "auto": measured at start-up
    # (proctor/capacity.py). Read the effective figure from the hub, not from here.
    max_sessions: int | None = None
    target_utilisation: float = 0.6
    session_overhead_cores: float = 0.22
    connect_timeout_seconds: float = 30.0
    retry_after_seconds: int = 30  # a refused offer's Retry-After (full, draining, backlog)

    def __post_init__(self) -> None:
        # Checked here rather than in _validate, so this section stays self-contained.
        if self.max_sessions is not None and self.max_sessions < 1:
            raise ConfigError("rtc.max_sessions", "must be 'auto' or 1 or more")
        if not 0 < self.target_utilisation <= 1:
            raise ConfigError("rtc.target_utilisation", "must be in (0, 1]")
        if self.session_overhead_cores < 0:
            raise ConfigError("rtc.session_overhead_cores", "must be zero or more")


@dataclass(frozen=True)
class PipelineConfig:
    analysis_fps: float = 5.0
    workers: int = 2
    lag_warning_seconds: float = 1.0
    status_interval_seconds: float = 1.0
    video_timeout_seconds: float = 1.0
    audio_chunk_seconds: float = 0.1
    audio_timeout_seconds: float = 2.0
    # Image and frame shapes refused before decoding or analysis (proctor/media/limits.py).
    max_frame_side: int = 4096
    max_frame_pixels: int = 4096 * 4096
    max_aspect_ratio: float = 4.0


@dataclass(frozen=True)
class FaceDetectorConfig:
    enabled: bool = True
    model: str = "short_range"
    min_confidence: float = 0.6


@dataclass(frozen=True)
class LandmarksConfig:
    """Head pose and gaze from the face mesh (proctor/detectors/landmarks.py)."""

    enabled: bool = True
    calibration_seconds: float = 3.0
    calibration_max_angle: float = 30.0
    gaze_horizontal_limit: float = 25.0
    gaze_down_limit: float = 25.0
    gaze_head_yaw_limit: float = 35.0
    eye_closed_ratio: float = 0.5

    def __post_init__(self) -> None:
        # Checked here rather than in _validate, so this section stays self-contained.
        prefix = "detectors.landmarks"
        if self.calibration_seconds < 0:
            raise ConfigError(f"{prefix}.calibration_seconds", "must be zero or more")
        for key in ("calibration_max_angle", "gaze_horizontal_limit", "gaze_down_limit",
                    "gaze_head_yaw_limit"):
            if not 0 < getattr(self, key) <= 90:
                raise ConfigError(f"{prefix}.{key}", "must be an angle in (0, 90] degrees")
        if not 0 < self.eye_closed_ratio < 1:
            raise ConfigError(f"{prefix}.eye_closed_ratio", "must be in (0, 1)")


@dataclass(frozen=True)
class ObjectsConfig:
    """Phones, people, books, laptops, screens (proctor/detectors/objects.py)."""

    enabled: bool = True
    fps: float = 1.25
    tile_zoom: float = 1.25
    verify_every: int = 2
    verify_floor: float = 0.15
    confirm_looks: int = 2
    person_threshold: float = 0.40
    evidence_threshold: float = 0.35
    box_floor: float = 0.2
    threads: int = 1

    def __post_init__(self) -> None:
        # Checked here rather than in _validate, so this section stays self-contained.
        prefix = "detectors.objects"
        if self.fps <= 0:
            raise ConfigError(f"{prefix}.fps", "must be positive")
        if not 1 <= self.tile_zoom <= 3:
            raise ConfigError(f"{prefix}.tile_zoom", "must be in [1, 3] (1: no tiles)")
        if self.verify_every == 1 or self.verify_every < 0:
            raise ConfigError(f"{prefix}.verify_every", "must be 0 (off) or at least 2")
        for key in ("person_threshold", "evidence_threshold", "box_floor", "verify_floor"):
            if not 0 < getattr(self, key) <= 1:
                raise ConfigError(f"{prefix}.{key}", "must be in (0, 1]")
        if self.threads < 1:
            raise ConfigError(f"{prefix}.threads", "must be positive")
        if self.confirm_looks < 1:
            raise ConfigError(f"{prefix}.confirm_looks", "must be at least 1")


@dataclass(frozen=True)
class IdentityConfig:
    """Face verification against the enrollment (proctor/detectors/identity.py)."""

    enabled: bool = True
    verify_every_seconds: float = 2.0
    track_carry_seconds: float = 10.0
    match_threshold: float = 0.40
    min_face_px: int = 64
    min_sharpness: float = 30.0
    min_confidence: float = 0.7
    enrollment_key: str = ""

    def __post_init__(self) -> None:
        # Checked here rather than in _validate, so this section stays self-contained.
        prefix = "detectors.identity"
        if self.verify_every_seconds <= 0:
            raise ConfigError(f"{prefix}.verify_every_seconds", "must be positive")
        if self.track_carry_seconds < self.verify_every_seconds:
            raise ConfigError(f"{prefix}.track_carry_seconds",
                              "must be at least verify_every_seconds")
        if not -1 <= self.match_threshold <= 1:
            raise ConfigError(f"{prefix}.match_threshold", "must be a cosine in [-1, 1]")
        if self.min_face_px < 1:
            raise ConfigError(f"{prefix}.min_face_px", "must be positive")
        if self.min_sharpness < 0:
            raise ConfigError(f"{prefix}.min_sharpness", "must be zero or more")
        if not 0 < self.min_confidence <= 1:
            raise ConfigError(f"{prefix}.min_confidence", "must be in (0, 1]")


@dataclass(frozen=True)
class CameraConfig:
    """Covered, dark or frozen camera (proctor/detectors/camera.py)."""

    enabled: bool = True
    dark_luma: float = 24.0
    flat_std: float = 6.0
    flat_edges: float = 0.005
    frozen_max_change: float = 0.02

    def __post_init__(self) -> None:
        prefix = "detectors.camera"
        if not 0 <= self.dark_luma <= 255:
            raise ConfigError(f"{prefix}.dark_luma", "must be a luma in [0, 255]")
        for key in ("flat_std", "frozen_max_change"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{prefix}.{key}", "must be zero or more")
        if not 0 <= self.flat_edges <= 1:
            raise ConfigError(f"{prefix}.flat_edges", "must be a share in [0, 1]")


@dataclass(frozen=True)
class VoiceConfig:
    """Voice activity, whispering and digital silence (proctor/detectors/voice.py)."""

    enabled: bool = True
    threshold: float = 0.5
    neg_threshold: float = 0.35
    hop_seconds: float = 0.256
    min_silence_seconds: float = 0.25
    min_speech_seconds: float = 0.25
    speech_pad_seconds: float = 0.03
    whisper_max_db: float = -25.0
    whisper_max_voiced: float = 0.2
    whisper_context_seconds: float = 0.5
    voicing_threshold: float = 0.5
    low_band_share: float = 0.3
    silence_level: float = 1e-4

    def __post_init__(self) -> None:
        # Checked here rather than in _validate, so this section stays self-contained.
        prefix = "detectors.voice"
        if not 0 < self.neg_threshold <= self.threshold < 1:
            raise ConfigError(f"{prefix}.neg_threshold",
                              "needs 0 < neg_threshold <= threshold < 1")
        for key in ("hop_seconds", "min_silence_seconds", "whisper_context_seconds"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{prefix}.{key}", "must be positive")
        for key in ("min_speech_seconds", "speech_pad_seconds", "silence_level"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{prefix}.{key}", "must be zero or more")
        for key in ("whisper_max_voiced", "voicing_threshold", "low_band_share"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"{prefix}.{key}", "must be in [0, 1]")
        if self.whisper_max_db > 0:
            raise ConfigError(f"{prefix}.whisper_max_db", "must be a level in dBFS (<= 0)")


@dataclass(frozen=True)
class SpeakersConfig:
    """A second voice besides the candidate's (proctor/detectors/speakers.py)."""

    enabled: bool = True
    match_threshold: float = 0.74
    window_seconds: float = 1.6
    hop_seconds: float = 0.5
    enrollment_seconds: float = 8.0
    min_speech_share: float = 0.5
    speech_margin_db: float = 12.0
    min_speech_dbfs: float = -55.0
    # Above match_threshold a voice is not another's on audio alone; below
    # support_threshold it is not surely the candidate's either: between the two it is
    # another voice only with support (the count model heard a separate voice, or the
    # candidate's lips were still). At or above support_threshold: the candidate.
    support_threshold: float = 0.78
    lips_still_share: float = 0.1  # lips moved in at most this share of a window's frames: still
    segmentation: bool = True  # count voices with pyannote's segmentation model when installed
    segmentation_window_seconds: float = 5.0
    segmentation_hop_seconds: float = 1.0
    min_voice_seconds: float = 0.5  # a local speaker needs this much speech alone to be judged
    other_voice_seconds: float = 0.3  # another voice this long in a window makes it a second voice

    def __post_init__(self) -> None:
        # Checked here rather than in _validate, so this section stays self-contained.
        prefix = "detectors.speakers"
        if not -1 <= self.match_threshold <= 1:
            raise ConfigError(f"{prefix}.match_threshold", "must be a cosine in [-1, 1]")
        if self.window_seconds < 1.6:
            raise ConfigError(f"{prefix}.window_seconds", "must be at least 1.6 (the model's)")
        if not 0 < self.hop_seconds <= self.window_seconds:
            raise ConfigError(f"{prefix}.hop_seconds", "must be in (0, window_seconds]")
        if self.enrollment_seconds <= 0:
            raise ConfigError(f"{prefix}.enrollment_seconds", "must be positive")
        if not 0 <= self.min_speech_share <= 1:
            raise ConfigError(f"{prefix}.min_speech_share", "must be in [0, 1]")
        if self.speech_margin_db < 0:
            raise ConfigError(f"{prefix}.speech_margin_db", "must be zero or more")
        if self.min_speech_dbfs >= 0:
            raise ConfigError(f"{prefix}.min_speech_dbfs", "must be below 0 dBFS")
        self._check_voice_evidence(prefix)

    def _check_voice_evidence(self, prefix: str) -> None:
        if not self.match_threshold <= self.support_threshold <= 1:
            raise ConfigError(f"{prefix}.support_threshold", "must be in [match_threshold, 1]")
        if not 0 <= self.lips_still_share < 1:
            raise ConfigError(f"{prefix}.lips_still_share", "must be in [0, 1)")
        if not 1.6 <= self.segmentation_window_seconds <= 10:
            raise ConfigError(f"{prefix}.segmentation_window_seconds", "must be in [1.6, 10]")
        if not 0 < self.segmentation_hop_seconds <= self.segmentation_window_seconds:
            raise ConfigError(f"{prefix}.segmentation_hop_seconds",
                              "must be in (0, segmentation_window_seconds]")
        for key in ("min_voice_seconds", "other_voice_seconds"):
            if not 0 < getattr(self, key) <= self.window_seconds:
                raise ConfigError(f"{prefix}.{key}", "must be in (0, window_seconds]")


@dataclass(frozen=True)
class TranscriptionConfig:
    """Speech to text in a background worker (proctor/transcript/)."""

    enabled: bool = True
    model: str = "tiny.en"  # tiny.en, base, or a folder holding a CTranslate2 Whisper model
    compute_type: str = "int8"
    cpu_threads: int = 2
    beam_size: int = 1
    language: str = ""  # empty: English for *.en models, detected for multilingual ones
    max_queue_seconds: float = 1800.0

    def __post_init__(self) -> None:
        # Checked here rather than in _validate, so this section stays self-contained.
        prefix = "detectors.transcription"
        if self.model not in ("tiny.en", "base") and "/" not in self.model:
            raise ConfigError(f"{prefix}.model", "must be tiny.en, base or a folder path")
        if self.compute_type not in ("int8", "int8_float32", "float32"):
            raise ConfigError(f"{prefix}.compute_type", "must be int8, int8_float32 or float32")
        for key in ("cpu_threads", "beam_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{prefix}.{key}", "must be 1 or more")
        if self.max_queue_seconds <= 0:
            raise ConfigError(f"{prefix}.max_queue_seconds", "must be positive")
        if self.model.endswith(".en") and self.language not in ("", "en"):
            raise ConfigError(f"{prefix}.language", f"{self.model} only knows English")


@dataclass(frozen=True)
class DetectorsConfig:
    faces: FaceDetectorConfig = field(default_factory=FaceDetectorConfig)
    landmarks: LandmarksConfig = field(default_factory=LandmarksConfig)
    objects: ObjectsConfig = field(default_factory=ObjectsConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    speakers: SpeakersConfig = field(default_factory=SpeakersConfig)
    transcription: TranscriptionConfig = field(default_factory=TranscriptionConfig)


@dataclass(frozen=True)
class EvidenceConfig:
    pre_seconds: float = 2.0
    post_seconds: float = 2.0
    max_clip_seconds: float = 60.0
    fps: float = 5.0
    max_width: int = 640  # wider frames are scaled down (aspect kept) before encoding
    preset: str = "ultrafast"  # libx264 preset
    bitrate: int = 300_000
    keyframe_seconds: float = 1.0
    audio_bitrate: int = 64_000  # AAC, mono 48 kHz; 0: clips without sound


@dataclass(frozen=True)
class LevelRule:
    threshold: float
    seconds: float
    op: str = ""  # empty: the row's op


@dataclass(frozen=True)
class RuleConfig:
    kind: str
    signal: tuple[str, ...]  # one name, or several: the most extreme present value counts
    op: str = ">="
    instant: bool = False
    gap_seconds: float | None = None  # this row's lapse tolerance (default flags.gap_seconds)
    low: LevelRule | None = None
    moderate: LevelRule | None = None
    high: LevelRule | None = None


@dataclass(frozen=True)
class FlagsConfig:
    gap_seconds: float = 0.5
    # Instant kinds (paste, fullscreen_exit): another event of the kind within this many
    # seconds of the last merges into its flag (evidence ``count``) instead of a new one.
    instant_merge_seconds: float = 5.0
    # At most one clip per instant kind this often; later flags in it share none.
    instant_clip_seconds: float = 30.0
    rules: tuple[RuleConfig, ...] = ()


@dataclass(frozen=True)
class SeverityNumbers:
    low: float
    moderate: float
    high: float


LLM_APIS = ("openai", "ollama")


@dataclass(frozen=True)
class LlmConfig:
    """An optional LLM that scores interview answers (proctor/review/llm.py).

    ``api: openai`` posts to ``{url}/v1/chat/completions`` (any OpenAI-compatible
    server), ``api: ollama`` to ``{url}/api/chat``. Any failure falls back to the local
    scorer, so a slow or broken endpoint never breaks a report."""

    url: str
    model: str
    api: str = "openai"
    api_key: str = ""  # sent as a bearer token when set (OpenAI-compatible servers)
    timeout_seconds: float = 30.0  # per attempt
    retries: int = 1  # further attempts after a failed or malformed answer

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError("scoring.llm.url", "must be an http:// or https:// URL")
        if not self.model.strip():
            raise ConfigError("scoring.llm.model", "must name a model")
        if self.api not in LLM_APIS:
            raise ConfigError("scoring.llm.api", f"must be one of {', '.join(LLM_APIS)}")
        if self.timeout_seconds <= 0:
            raise ConfigError("scoring.llm.timeout_seconds", "must be positive")
        if not 0 <= self.retries <= 10:
            raise ConfigError("scoring.llm.retries", "must be 0 to 10")


@dataclass(frozen=True)
class AnswersConfig:
    """The knowledge base and the local answer scorer (proctor/kb/, proctor/review/)."""

    max_document_bytes: int = 262_144  # POST /kb answers 413 above this (UTF-8 bytes)
    chunk_words: int = 80  # target chunk size; a paragraph that fits stays whole
    retrieve_k: int = 4  # rubric and reference chunks retrieved per answer
    pass_score: float = 7.0  # SPEC: PASS also needs final_score >= 7 once answers are scored

    def __post_init__(self) -> None:
        if self.max_document_bytes < 1:
            raise ConfigError("scoring.answers.max_document_bytes", "must be positive")
        if not 10 <= self.chunk_words <= 200:
            raise ConfigError("scoring.answers.chunk_words",
                              "must be 10 to 200 (the model reads 256 word pieces)")
        if not 1 <= self.retrieve_k <= 20:
            raise ConfigError("scoring.answers.retrieve_k", "must be 1 to 20")
        if not 0 <= self.pass_score <= 10:
            raise ConfigError("scoring.answers.pass_score", "must be 0 to 10")


@dataclass(frozen=True)
class ScoringConfig:
    risk_weights: SeverityNumbers = field(
        default_factory=lambda: SeverityNumbers(low=5.0, moderate=15.0, high=35.0)
    )
    risk_half_life_seconds: float = 120.0
    flag_penalties: SeverityNumbers = field(
        default_factory=lambda: SeverityNumbers(low=0.02, moderate=0.05, high=0.10)
    )
    merge_gap_seconds: float = 5.0
    answers: AnswersConfig = field(default_factory=AnswersConfig)
    llm: LlmConfig | None = None  # None: answers are scored locally only


@dataclass(frozen=True)
class WebhooksConfig:
    """Outbound deliveries (proctor/outbound/; SPEC "Webhooks")."""

    timeout_seconds: float = 10.0  # a 2xx within this is success
    retry_initial_seconds: float = 10.0  # the first retry's delay; doubling after
    retry_max_seconds: float = 3600.0  # no single wait is longer
    give_up_after_seconds: float = 86400.0  # retried until then, then "failed"
    poll_seconds: float = 1.0  # how often a node looks for due deliveries
    # A node attempting a delivery holds it this long; must outlast an attempt, or a
    # slow receiver would be sent the event twice, by two nodes.
    lease_seconds: float = 30.0
    concurrency: int = 8  # deliveries one node sends at once
    # Private networks (CIDR) webhooks may be sent to; public addresses always may.
    # Loopback, private, link-local and reserved addresses are refused otherwise
    # (proctor/outbound/addresses.py: a key holder must not reach the server's own side).
    allowed_networks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Checked here rather than in _validate, so this section stays self-contained.
        if self.lease_seconds <= self.timeout_seconds:
            raise ConfigError("webhooks.lease_seconds",
                              "must be longer than webhooks.timeout_seconds")
        for network in self.allowed_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ConfigError("webhooks.allowed_networks",
                                  f"{network!r} is not a network (CIDR, e.g. 10.0.0.0/8)"
                                  ) from exc


@dataclass(frozen=True)
class LimitsConfig:
    """Request limits, in process: each node counts its own (signaling/limits.py)."""

    enabled: bool = True
    key_requests_per_minute: int = 6000  # per API key or token, sustained
    key_burst: int = 1000  # requests one key may send at once
    address_requests_per_minute: int = 6000  # per client address, sustained
    address_burst: int = 1000
    failed_auth_max: int = 50  # 401s one address may earn per window; then 429
    failed_auth_window_seconds: float = 300.0
    events_per_session_per_minute: int = 600  # browser telemetry events, per session
    # Addresses of reverse proxies whose X-Forwarded-For names the client.
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetentionConfig:
    """How long stored data is kept (proctor/retention.py); 0 keeps it forever."""

    clips_days: float = 30.0
    sessions_days: float = 365.0
    enrollments_days: float = 365.0
    transcripts_days: float = 365.0
    interval_seconds: float = 3600.0  # how often a running server purges


@dataclass(frozen=True)
class OutboxConfig:
    """The local outbox live sessions write to while the store is away
    (proctor/store/outbox.py)."""

    path: str = ""  # the SQLite file; empty: <data_dir>/store-outbox.db
    # At this many waiting records the node refuses new sessions and /readyz says 503;
    # nothing is dropped (live sessions keep appending: their records are evidence).
    max_records: int = 50_000
    retry_seconds: float = 1.0  # the first wait before replaying again (doubling to 10 s)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    rtc: RtcConfig = field(default_factory=RtcConfig)
    store: str = "sqlite:///data/proctor.db"
    bus: str = "memory"
    clips: str = "file://data/clips"
    nodes: NodesConfig = field(default_factory=NodesConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    detectors: DetectorsConfig = field(default_factory=DetectorsConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    flags: FlagsConfig = field(default_factory=FlagsConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def outbox_path(self) -> Path:
        return Path(self.outbox.path) if self.outbox.path else self.data_dir / "store-outbox.db"

    @property
    def clips_in_store(self) -> bool:
        """``clips: store``: clips live in the store's database, readable by every node."""
        return self.clips == CLIPS_IN_STORE

    @property
    def clips_dir(self) -> Path:
        """Where clip files are written: their home for ``file://``, a spool for ``store``
        (each is moved into the database once written)."""
        if self.clips_in_store:
            return self.data_dir / "clip-spool"
        if not self.clips.startswith("file://"):
            raise ConfigError("clips", "must be a file:// URL or 'store'")
        return Path(self.clips.removeprefix("file://"))


# Values that must be positive, checked after the types: key path -> allow zero.
_POSITIVE: dict[str, bool] = {
    "server.port": False,
    "server.max_body_bytes": False,
    "server.max_upload_bytes": False,
    "server.shutdown_seconds": False,
    "auth.token_seconds": False,
    "auth.max_session_hours": False,
    "rtc.connect_timeout_seconds": False,
    "rtc.retry_after_seconds": False,
    "nodes.heartbeat_seconds": False,
    "nodes.dead_after_seconds": False,
    "nodes.request_timeout_seconds": False,
    "pipeline.analysis_fps": False,
    "pipeline.workers": False,
    "pipeline.status_interval_seconds": False,
    "pipeline.video_timeout_seconds": False,
    "pipeline.audio_chunk_seconds": False,
    "pipeline.audio_timeout_seconds": False,
    "pipeline.max_frame_side": False,
    "pipeline.max_frame_pixels": False,
    "pipeline.max_aspect_ratio": False,
    "evidence.pre_seconds": True,
    "evidence.post_seconds": True,
    "evidence.max_clip_seconds": False,
    "evidence.fps": False,
    "evidence.max_width": False,
    "evidence.bitrate": False,
    "evidence.keyframe_seconds": False,
    "flags.gap_seconds": True,
    "scoring.risk_half_life_seconds": False,
    "webhooks.timeout_seconds": False,
    "webhooks.retry_initial_seconds": False,
    "webhooks.retry_max_seconds": False,
    "webhooks.give_up_after_seconds": True,
    "webhooks.poll_seconds": False,
    "webhooks.lease_seconds": False,
    "webhooks.concurrency": False,
    "limits.key_requests_per_minute": False,
    "limits.key_burst": False,
    "limits.address_requests_per_minute": False,
    "limits.address_burst": False,
    "limits.failed_auth_max": False,
    "limits.failed_auth_window_seconds": False,
    "limits.events_per_session_per_minute": False,
    "retention.clips_days": True,
    "retention.sessions_days": True,
    "retention.enrollments_days": True,
    "retention.transcripts_days": True,
    "retention.interval_seconds": False,
    "outbox.max_records": False,
    "outbox.retry_seconds": False,
    "flags.instant_merge_seconds": True,
    "flags.instant_clip_seconds": True,
}
# Keys that take ``auto`` or an integer; ``auto`` loads as None.
_AUTO_KEYS = frozenset({"rtc.max_sessions"})
_CHOICES: dict[str, tuple[str, ...]] = {
    "detectors.faces.model": ("short_range", "full_range"),
    "evidence.preset": ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium"),
}
_OPS = ("<", "<=", ">", ">=", "==")


def default_config_path() -> Path:
    """The shipped ``config.yaml``: inside the installed package, or at the repo root."""
    packaged = Path(__file__).with_name("config.yaml")
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parent.parent / "config.yaml"


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults, then ``path`` merged over them, then ``env``, then ``overrides``.

    ``overrides`` uses the same nested shape as the file (tests and CLI flags).
    """
    tree = _read_yaml(default_config_path())
    if path is not None:
        _deep_merge(tree, _read_yaml(Path(path)))
    _apply_env(tree, os.environ if env is None else env)
    if overrides:
        _deep_merge(tree, dict(overrides))
    config = _build(Config, tree, "")
    _validate(config)
    return config


# libyaml's safe loader where PyYAML was built with it (its wheels are): the config file
# parses in 20 ms instead of 200 ms, at every start and every `load_config`.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(), Loader=_YAML_LOADER) or {}
    except FileNotFoundError as exc:
        raise ConfigError("--config", f"file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError("--config", f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{path} must hold a mapping at the top level")
    return data


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def _apply_env(tree: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name.removeprefix(ENV_PREFIX).split("__")]
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(".".join(parts), f"{name} addresses inside a scalar key")
            node = child
        try:
            node[parts[-1]] = _parse_env_value(raw)
        except yaml.YAMLError as exc:  # "[", "a: b: c": the key's value, not a crash
            problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(".".join(parts), f"{name} is not valid YAML: {problem}"
                              ) from exc


def _parse_env_value(raw: str) -> Any:
    """YAML for structured values; a bare comma-separated string becomes a list."""
    stripped = raw.strip()
    if stripped.startswith(("[", "{")):
        return yaml.safe_load(stripped)
    if "," in stripped:
        return [item.strip() for item in stripped.split(",") if item.strip()]
    return yaml.safe_load(stripped) if stripped else ""


T = TypeVar("T")


def _build(cls: type[T], data: Any, prefix: str) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(prefix or "<root>", f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            raise ConfigError(_join(prefix, str(key)), "unknown key")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            values[f.name] = _coerce(hints[f.name], data[f.name], _join(prefix, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(_join(prefix, f.name), "is required")
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if key in _AUTO_KEYS:
        return _auto_or_count(value, key)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(options[0], value, key)
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return tuple(_coerce(item_type, v, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)  # type: ignore[arg-type]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if hint is float:
        # NaN passes every "must be positive" check (all comparisons are false) and
        # would switch a rule or a timer off silently: refused like a wrong type.
        if isinstance(value, int | float) and not isinstance(value, bool) \
                and math.isfinite(value):
            return float(value)
        raise ConfigError(key, f"expected a finite number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(key, f"expected a string, got {value!r}")
    raise ConfigError(key, f"unsupported type {hint!r}")  # pragma: no cover - a coding error


def _auto_or_count(value: Any, key: str) -> int | None:
    """``auto`` (None: decided at start-up) or a whole number."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ConfigError(key, f"expected 'auto' or a whole number, got {value!r}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _lookup(config: Config, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _validate(config: Config) -> None:
    for key, allow_zero in _POSITIVE.items():
        value = _lookup(config, key)
        if value < 0 or (value == 0 and not allow_zero):
            raise ConfigError(key, f"must be {'zero or more' if allow_zero else 'positive'}")
    for key, choices in _CHOICES.items():
        if _lookup(config, key) not in choices:
            raise ConfigError(key, f"must be one of {', '.join(choices)}")
    if not 0 < config.detectors.faces.min_confidence <= 1:
        raise ConfigError("detectors.faces.min_confidence", "must be in (0, 1]")
    if not config.store.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ConfigError("store", "must be a sqlite:// or postgresql:// URL")
    if not (config.bus == "memory" or config.bus.startswith("redis://")):
        raise ConfigError("bus", "must be 'memory' or a redis:// URL")
    config.clips_dir  # noqa: B018 - raises ConfigError for an unsupported scheme
    if config.auth.token_ttl_seconds is not None and config.auth.token_ttl_seconds <= 0:
        raise ConfigError("auth.token_ttl_seconds", "must be positive")
    _validate_rules(config.flags.rules)


def _validate_rules(rules: tuple[RuleConfig, ...]) -> None:
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        key = f"flags.rules[{index}]"
        if rule.kind in seen:
            raise ConfigError(f"{key}.kind", f"'{rule.kind}' has two rows")
        seen.add(rule.kind)
        if rule.op not in _OPS:
            raise ConfigError(f"{key}.op", f"must be one of {' '.join(_OPS)}")
        if rule.gap_seconds is not None and rule.gap_seconds < 0:
            raise ConfigError(f"{key}.gap_seconds", "must be zero or more")
        levels = [(name, lvl) for name in ("low", "moderate", "high")
                  if (lvl := getattr(rule, name)) is not None]
        if not levels:
            raise ConfigError(key, "needs at least one of low, moderate, high")
        for name, level in levels:
            if level.op and level.op not in _OPS:
                raise ConfigError(f"{key}.{name}.op", f"must be one of {' '.join(_OPS)}")
            if level.seconds < 0:
                raise ConfigError(f"{key}.{name}.seconds", "must be zero or more")
