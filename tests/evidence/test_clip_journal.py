"""A clip being recorded is journaled to disk as fragmented MP4, so a process killed
mid-clip (SIGKILL: no close, no moov) leaves it recoverable as a playable clip.

The crash is real: a child process records with the real encoders and kills itself
with SIGKILL while the clip is still open; the test then recovers the clip from what
the dead process left on disk and decodes it (video frame indices, audio beeps).
"""

from __future__ import annotations

import asyncio
import os
import signal as signals
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from proctor.evidence import EvidenceRecorder
from proctor.evidence.recorder import journal_path, recover_clip
from tests.evidence.test_audio import CONFIG, FPS, Feeder, assert_spans_video, decode, signal
from tests.evidence.test_recorder import Clips, decode_clip

REPO = Path(__file__).resolve().parents[2]
BEEPS = (3.0, 6.0)  # media times of loud beeps in the child's sound
CLIP_START = 4.0  # the flag's start: the clip reaches back pre_seconds (2 s) before it
KILLED_AT = 10.0  # media time pushed when the child kills itself


async def _record_then_die(clips_dir: Path) -> None:
    """The child: record 10 s with a clip open from 4 s, then die without closing."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        rec = EvidenceRecorder("sess-k", CONFIG, clips_dir, pool, Clips(), batch_seconds=0.0)
        feeder = Feeder(rec, signal(12.0, beeps=BEEPS))
        await feeder.run(0.0, 4.5)
        rec.open_clip("clip-k", "flag-k", start=CLIP_START)
        await feeder.run(4.5, KILLED_AT)
        while rec._journal_task is not None:  # what was handed to the journal is written
            await asyncio.sleep(0.01)
        os.kill(os.getpid(), signals.SIGKILL)


def record_then_die(clips_dir: str) -> None:
    asyncio.run(_record_then_die(Path(clips_dir)))


def crash_while_recording(clips_dir: Path) -> None:
    """Run :func:`record_then_die` in a child process; it leaves clip-k's journal."""
    child = subprocess.run(
        [sys.executable, "-c", "from tests.evidence.test_clip_journal import record_then_die; "
         f"record_then_die({str(clips_dir)!r})"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert child.returncode == -signals.SIGKILL, child.stderr


def test_a_clip_open_when_the_process_is_killed_is_recovered(tmp_path: Path) -> None:
    clips_dir = tmp_path / "clips"
    crash_while_recording(clips_dir)
    journal = journal_path(clips_dir, "clip-k")
    assert journal.is_file() and journal.stat().st_size > 0
    assert not (clips_dir / "clip-k.mp4").exists(), "no plain MP4 before the clip ends"

    record = recover_clip(clips_dir, "clip-k", "sess-k", "flag-k", CONFIG)

    assert record is not None
    assert (record.clip_id, record.session_id, record.flag_id) == ("clip-k", "sess-k", "flag-k")
    path = clips_dir / "clip-k.mp4"
    assert record.path == str(path) and record.size_bytes == path.stat().st_size
    assert not journal.exists(), "the journal is spent"
    indices, _ = decode_clip(path)
    first, last = indices[0] / FPS, indices[-1] / FPS
    assert indices == list(range(indices[0], indices[-1] + 1)), "no gaps, no repeats"
    # From the keyframe at or before start - pre, as a finished clip would be ...
    assert CLIP_START - CONFIG.pre_seconds - CONFIG.keyframe_seconds - 1e-6 <= first
    assert first <= CLIP_START - CONFIG.pre_seconds + 1e-6
    # ... to the last whole fragment (a fragment starts at each 1 s keyframe): at most
    # the fragment being filled when the process died is lost.
    assert KILLED_AT - 2 * CONFIG.keyframe_seconds <= last < KILLED_AT
    assert record.start == pytest.approx(first, abs=1e-4)
    assert record.end == pytest.approx(last, abs=1e-4)
    # The sound came back too, aligned: the beep at 6.0 sounds with frame 6.0.
    clip = decode(path)
    assert_spans_video(clip)
    assert abs(clip.onset(BEEPS[1] - first - 0.5) - clip.frame_time(round(BEEPS[1] * FPS))) <= 0.01
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "a plain faststart MP4, like any clip"


async def test_the_journal_exists_while_the_clip_records_and_goes_once_it_is_written(
    tmp_path: Path,
) -> None:
    clips, clips_dir = Clips(), tmp_path / "clips"
    with ThreadPoolExecutor(max_workers=2) as pool:
        rec = EvidenceRecorder("sess-j", CONFIG, clips_dir, pool, clips, batch_seconds=0.0)
        feeder = Feeder(rec, signal(12.0, beeps=BEEPS))
        await feeder.run(0.0, 4.5)
        rec.open_clip("clip-j", "flag-j", start=CLIP_START)
        await feeder.run(4.5, 6.0)
        journal = journal_path(clips_dir, "clip-j")
        deadline = time.monotonic() + 10
        while not journal.is_file() or journal.stat().st_size == 0:
            assert time.monotonic() < deadline, "no journal written"
            await asyncio.sleep(0.01)
        rec.close_clip("clip-j", end=6.0)
        await feeder.run(6.0, 9.0)
        await rec.aclose()
    assert [r.clip_id for r in clips.records] == ["clip-j"]
    assert sorted(p.name for p in clips_dir.iterdir()) == ["clip-j.mp4"], "journal removed"
    # Nothing left to recover: a finished clip is never recovered over.
    assert recover_clip(clips_dir, "clip-j", "sess-j", "flag-j", CONFIG) is None


def test_recovery_without_a_usable_journal_is_none(tmp_path: Path) -> None:
    assert recover_clip(tmp_path, "never-journaled", "s", "f", CONFIG) is None
    torn = journal_path(tmp_path, "torn")
    torn.write_bytes(b"\x00\x00\x00\x18ftypiso5")  # died before its first fragment
    assert recover_clip(tmp_path, "torn", "s", "f", CONFIG) is None
    assert not torn.exists()
    assert not (tmp_path / "torn.mp4").exists()
