"""Cost of writing evidence clips: the remux at the end, the crash journal while it records.

    python -m bench.clips [--seconds 30] [--repeat 5]

A clip is cut from the session's continuous recording (see bench/evidence.py for that
encode, paid per session per second) by remuxing H.264 + AAC packets into a faststart
MP4 once the clip is due (``write_mp4``). Since clips are also journaled while they
record (a fragmented MP4 appended every encode batch, so a crash leaves them
recoverable, ``ClipJournal``), an open clip costs that too; a crash costs one recovery
(``recover_clip``: demux the journal, remux it). Each row is CPU milliseconds (this
thread, user + system: file writes included) per second of clip, the median of
``--repeat`` runs, on webcam-like 640x480 video as the recorder encodes it (default
evidence settings) with 48 kHz speech-like sound as AAC.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from proctor.config import EvidenceConfig
from proctor.evidence.audio import AUDIO_RATE, AacEncoder, AudioPacket
from proctor.evidence.recorder import (
    ENCODE_BATCH_SECONDS,
    AudioTrack,
    ClipJournal,
    EncodedPacket,
    StreamInfo,
    _FrameGate,
    _H264Encoder,
    journal_path,
    recover_clip,
    span_audio,
    write_mp4,
)

if __package__:  # python -m bench.clips
    from .evidence import FPS, webcam_frames
else:  # python bench/clips.py
    from evidence import FPS, webcam_frames  # type: ignore[no-redef]

CONFIG = EvidenceConfig()


def encode(seconds: float) -> tuple[StreamInfo, list[EncodedPacket], AudioTrack]:
    """The recorder's packets for ``seconds`` of camera and microphone."""
    encoder, gate = _H264Encoder(CONFIG), _FrameGate(CONFIG.fps)
    packets: list[EncodedPacket] = []
    for index, frame in enumerate(webcam_frames(seconds)):
        if gate.accept(index / FPS):
            packets += encoder.encode([(frame, index / FPS)])
    packets += encoder.flush()
    assert encoder.stream is not None
    sound = AacEncoder(CONFIG.audio_bitrate)
    rng = np.random.default_rng(2)
    audio: list[AudioPacket] = []
    for index in range(int(seconds * 50)):  # 20 ms frames, as WebRTC hands them over
        t = np.arange(960) / AUDIO_RATE + index * 0.02
        voice = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
        samples = (voice + 0.02 * rng.standard_normal(960)).astype(np.float32)
        chunk = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        chunk.sample_rate = AUDIO_RATE
        audio += sound.encode([(chunk, index * 0.02)])
    audio += sound.flush()
    assert sound.stream is not None
    track = span_audio(audio, sound.stream, packets[0].time, packets[-1].time + 1 / CONFIG.fps)
    assert track is not None
    return encoder.stream, packets, track


def cpu_ms(work: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.thread_time()
        work()
        runs.append((time.thread_time() - started) * 1000)
    return statistics.median(runs)


Batches = list[tuple[list[EncodedPacket], list[AudioPacket]]]


def batches(packets: list[EncodedPacket], audio: AudioTrack) -> Batches:
    """The packets as the recorder hands them to a journal: one batch per encode job."""
    out: Batches = []
    t = packets[0].time
    while t <= packets[-1].time:
        out.append(([p for p in packets if t <= p.time < t + ENCODE_BATCH_SECONDS],
                    [p for p in audio.packets if t <= p.time < t + ENCODE_BATCH_SECONDS]))
        t += ENCODE_BATCH_SECONDS
    return out


def journal(folder: Path, stream: StreamInfo, origin: int, audio: AudioTrack,
            batched: Batches, keep: bool = False) -> None:
    """What the recorder does for an open clip: an append per encode batch."""
    writer = ClipJournal(journal_path(folder, "bench"), stream, audio.stream, origin)
    for video, sound in batched:
        writer.append(video, sound)
    if keep:
        writer._close()  # as a crash would leave it, less the held frame
    else:
        writer.discard()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    stream, packets, audio = encode(args.seconds)
    seconds = packets[-1].time - packets[0].time + 1 / CONFIG.fps
    with tempfile.TemporaryDirectory(prefix="proctor-clips-") as tmp:
        folder = Path(tmp)
        final = cpu_ms(lambda: write_mp4(folder / "clip.mp4", stream, packets, audio),
                       args.repeat)
        batched = batches(packets, audio)
        origin = packets[0].pts
        journaled = cpu_ms(lambda: journal(folder, stream, origin, audio, batched),
                           args.repeat)
        journal(folder, stream, origin, audio, batched, keep=True)
        size = journal_path(folder, "bench").stat().st_size

        def recover() -> None:
            journal(folder, stream, origin, audio, batched, keep=True)
            assert recover_clip(folder, "bench", "s", "f", CONFIG) is not None

        recovery = cpu_ms(recover, args.repeat) - journaled
    print(f"evidence clip of {seconds:.1f} s: H.264 {stream.width}x{stream.height} "
          f"{CONFIG.fps:g} fps + AAC mono {CONFIG.audio_bitrate // 1000} kbit/s, "
          f"median of {args.repeat}; journal {size / seconds * 8 / 1000:.0f} kbit/s "
          f"on disk")
    print(f"{'step':56s} {'CPU ms':>8s} {'ms per clip s':>14s}")
    rows = [
        ("finished clip: faststart MP4 remux (before and after)", final),
        ("crash journal while it records (new, per open clip)", journaled),
        ("clip cost now: journal + finished MP4", journaled + final),
        ("after a crash: recover the journal into the clip", recovery),
    ]
    for name, ms in rows:
        print(f"{name:56s} {ms:8.1f} {ms / seconds:14.2f}")


if __name__ == "__main__":
    main()
