"""Speech to text for a session's timed transcript.

* :mod:`proctor.transcript.model` loads Whisper (CTranslate2, via faster-whisper) once
  per process and transcribes 16 kHz mono speech into segments in media time.
* :mod:`proctor.transcript.worker` runs it per session in the background, off the live
  path, fed with the speech segments the voice-activity stage finds.
* :mod:`proctor.transcript.wer` measures word error rate (tests and the bench).

Importing this package is cheap: faster-whisper is imported when a model is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from proctor.store.base import TranscriptSegment


def transcript_document(segments: Iterable[TranscriptSegment]) -> dict[str, Any]:
    """The API's transcript: ``{segments: [{start, end, text, confidence}], text}``."""
    ordered = sorted(segments, key=lambda s: (s.start, s.end))
    text = " ".join(s.text.strip() for s in ordered if s.text.strip())
    return {"segments": [s.to_dict() for s in ordered], "text": text}


__all__ = ["TranscriptSegment", "transcript_document"]
