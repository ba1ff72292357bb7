"""Evidence: a rolling H.264 buffer of each session's video and the MP4 clips cut from it.

:class:`EvidenceRecorder` encodes a session's video once, off the event loop, and
remuxes flagged stretches (with padding either side) into browser-playable MP4 files.
"""

from proctor.evidence.recorder import EvidenceRecorder

__all__ = ["EvidenceRecorder"]
