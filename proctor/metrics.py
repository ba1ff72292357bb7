"""Prometheus metrics, one registry per app (no process globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.07, 0.1, 0.2, 0.5, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions_live = Gauge("proctor_sessions_live", "Sessions live on this node",
                                   registry=r)
        self.sessions_capacity = Gauge(
            "proctor_sessions_capacity",
            "Live sessions this node admits (rtc.max_sessions, configured or measured)",
            registry=r)
        self.load = Gauge(
            "proctor_load",
            "The busier of live/capacity and the process's CPU share of its usable cores "
            "over the last 10 s (1: full)", registry=r)
        self.cpu_share = Gauge(
            "proctor_cpu_share",
            "The process's CPU use over the last 10 s as a share of its usable cores",
            registry=r)
        self.offers_refused = Counter(
            "proctor_offers_refused_total",
            "Candidate offers answered 503 because the node was at capacity", registry=r)
        self.frames_received = Counter("proctor_frames_received_total",
                                       "Video frames received from candidates", registry=r)
        self.frames_analysed = Counter("proctor_frames_analysed_total",
                                       "Video frames run through the detector stages",
                                       registry=r)
        self.frames_dropped = Counter(
            "proctor_frames_dropped_total",
            "Analysis slots missed because the workers were still busy", registry=r)
        self.analysis_lag = Histogram(
            "proctor_analysis_lag_seconds",
            "From a frame's arrival to the end of its analysis", buckets=LAG_BUCKETS,
            registry=r)
        self.stage_seconds = Histogram("proctor_stage_seconds", "Time per detector stage",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.degradation_level = Gauge(
            "proctor_degradation_level",
            "0 full rate; 1 transcription deferred; 2 object rate reduced; 3 analysis rate "
            "reduced", registry=r)
        # Set when /metrics is scraped: a soak watches that none of these creep up.
        self.asyncio_tasks = Gauge("proctor_asyncio_tasks",
                                   "Tasks alive on this node's event loop", registry=r)
        self.flags = Counter("proctor_flags_total", "Flags opened", ["kind", "severity"],
                             registry=r)
        self.clips_written = Counter("proctor_clips_written_total", "Evidence clips written",
                                     registry=r)
        self.evidence_dropped = Counter("proctor_evidence_frames_dropped_total",
                                        "Frames the evidence encoder could not keep up with",
                                        registry=r)
        self.outbox_depth = Gauge(
            "proctor_store_outbox_depth",
            "Records (flags, events, transcript, clips) waiting in the local outbox for "
            "the store", registry=r)
        self.outbox_replayed = Counter(
            "proctor_store_outbox_replayed_total",
            "Outbox records written to the store once it was back", registry=r)
        self.datachannel_dropped = Counter(
            "proctor_datachannel_dropped_total",
            "Messages not sent because a DataChannel's buffer was full", ["channel"],
            registry=r)
