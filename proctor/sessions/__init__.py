"""Live sessions: create, own, route, end, recover (the service signaling/ calls)."""

from __future__ import annotations

from proctor.sessions.live import CandidateLink, LiveSession, Peer, SessionOutlet
from proctor.sessions.service import AtCapacity, SessionEnded, SessionService, decision_delay

__all__ = ["AtCapacity", "CandidateLink", "LiveSession", "Peer", "SessionEnded",
           "SessionOutlet", "SessionService", "decision_delay"]
