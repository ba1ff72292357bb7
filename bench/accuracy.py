"""Accuracy of the video flags on labelled clips made from real photos.

    python -m bench.accuracy [--quick] [--kinds face_absent,head_turned,...] [--fps 15]
                             [--phones 12] [--keep DIR] [--detail] [--set all|base|hard]

Every scenario of tests/scenarios.py (still photos in webcam framing) and of
bench/scenarios.py (moving heads, real video of people talking, VP8 at 150 kbit/s, low
light) is written to an H.264 MP4 (or a VP8 WebM) in a temp dir and run
through ``analyze_video`` with the real detectors and the default config (the same
stages and flag tracker a live session uses). Reported flags are matched to the
scenario's ground-truth intervals per kind:

- a flag is a hit when it overlaps a truth interval of its kind; a flag overlapping an
  *excused* interval of its kind (a covered lens also hides the face) is left out of
  precision; every other flag is false;
- recall = truth intervals with at least one hit / all truth intervals;
  precision = hits / (all flags of the kind − excused ones);
- start error = flag start − truth onset, median over hits. The tracker backdates a
  flag's start to the onset of the run that opened it, so this is how well the flag
  *locates* the event (sampling at ``pipeline.analysis_fps`` and the detector's own
  reaction), not when it was raised;
- decided = start error + the rule's minimum duration (config.yaml ``flags.rules``): a
  flag opens at the first sample where its run has lasted that long, so this is the
  delay, from the truth onset, at which a live proctor would have seen it;
- end error = the last hit's end − truth end, median: how long a flag outlives the
  event (a detector's memory, such as the object stage's one-second cycle of passes);
- false flags per minute (and per clean hour): every flag on a clean clip (a frontal
  candidate present the whole time, nothing excused) is false.

Nothing is written into the repository (``--keep DIR`` keeps the clips there).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench import scenarios as hard
from proctor.config import Config, load_config
from proctor.detectors.base import Detector
from proctor.detectors.registry import build_detectors
from proctor.flags.rules import rules_from_config
from tests import scenarios as lib
from tests.scenarios import Outcome, Scenario, missed, overlaps, run_scenario, unexpected


@dataclass
class KindScore:
    positives: int = 0  # truth intervals
    detected: int = 0  # truth intervals with a hit
    flags: int = 0  # flags of this kind, excused ones left out
    hits: int = 0  # flags overlapping a truth interval
    excused: int = 0
    start_errors: list[float] = field(default_factory=list)
    end_errors: list[float] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        return self.detected / self.positives if self.positives else None

    @property
    def precision(self) -> float | None:
        return self.hits / self.flags if self.flags else None


# --- matching ---------------------------------------------------------------------------


def score(outcomes: Iterable[Outcome], kinds: Sequence[str]) -> dict[str, KindScore]:
    scores = {kind: KindScore() for kind in kinds}
    for outcome in outcomes:
        _score_one(outcome, scores)
    return scores


def _score_one(outcome: Outcome, scores: dict[str, KindScore]) -> None:
    scenario, end = outcome.scenario, outcome.media_seconds
    truth, excused = scenario.truth(), scenario.excused()
    for interval in truth:
        if interval.kind not in scores:
            continue
        kind = scores[interval.kind]
        kind.positives += 1
        hits = [f for f in outcome.flags if overlaps(f, interval, end)]
        if hits:
            kind.detected += 1
            kind.start_errors.append(min(f["start"] for f in hits) - interval.start)
            kind.end_errors.append(max(f["end"] if f["end"] is not None else end
                                       for f in hits) - interval.end)
    for flag in outcome.flags:
        kind = scores.setdefault(flag["kind"], KindScore())
        if any(overlaps(flag, interval, end) for interval in truth):
            kind.hits += 1
            kind.flags += 1
        elif any(overlaps(flag, interval, end) for interval in excused):
            kind.excused += 1
        else:
            kind.flags += 1


# --- running ----------------------------------------------------------------------------


def rule_seconds(config: Config) -> dict[str, float]:
    """The shortest run that opens each kind's flag (its lowest level's duration)."""
    return {str(rule.kind): rule.levels[0].seconds
            for rule in rules_from_config(config.flags.rules)}


# --- output -----------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(scores: dict[str, KindScore], rules: dict[str, float]) -> None:
    print(f"\n{'kind':<18} {'positives':>9} {'detected':>8} {'flags':>5} {'false':>5} "
          f"{'excused':>7} {'precision':>9} {'recall':>6} {'start err s':>11} "
          f"{'rule s':>6} {'decided s':>9} {'end err s':>9}")
    for kind, row in scores.items():
        if not (row.positives or row.flags or row.excused):
            continue
        error = statistics.median(row.start_errors) if row.start_errors else None
        decided = None if error is None else error + rules.get(kind, 0.0)
        end = statistics.median(row.end_errors) if row.end_errors else None
        print(f"{kind:<18} {row.positives:>9} {row.detected:>8} {row.flags:>5} "
              f"{row.flags - row.hits:>5} {row.excused:>7} {_fmt(row.precision):>9} "
              f"{_fmt(row.recall):>6} {_fmt(error):>11} {_fmt(rules.get(kind), 1):>6} "
              f"{_fmt(decided):>9} {_fmt(end):>9}")


def print_breakdown(outcomes: Sequence[Outcome]) -> None:
    """Recall per tag (a phone's size, where it is held) for the tagged scenarios."""
    found: dict[str, list[bool]] = {}
    for outcome in outcomes:
        for tag in outcome.scenario.tags:
            found.setdefault(tag, []).append(not missed(outcome))
    if found:
        cells = [f"{tag} {sum(hits)}/{len(hits)}"
                 for tag, hits in sorted(found.items(), key=lambda item: _tag_order(item[0]))]
        print("\nrecall by " + ", ".join(cells))


def _tag_order(tag: str) -> tuple[int, str]:
    """Sizes first, largest first ("200px" before "80px"), then the rest by name."""
    size = tag.removesuffix("px")
    return (-int(size), "") if size.isdigit() else (1, tag)


def print_clean(outcomes: Sequence[Outcome], label: str = "clean clips") -> None:
    clean = [o for o in outcomes if o.scenario.clean]
    minutes = sum(o.media_seconds for o in clean) / 60
    false = sum(len(o.flags) for o in clean)
    rate = false / minutes if minutes else float("nan")
    kinds = sorted({f["kind"] for o in clean for f in o.flags})
    print(f"\n{label}: {len(clean)}, {minutes:.1f} min, {false} flags "
          f"→ {rate:.2f} false flags per minute, {rate * 60:.1f} per clean hour"
          + (f" ({', '.join(kinds)})" if kinds else ""))


def print_outcome(outcome: Outcome, detail: bool) -> None:
    bad, miss = unexpected(outcome), missed(outcome)
    verdict = "ok" if not bad and not miss else "MISS" if miss and not bad else "FALSE"
    if miss and bad:
        verdict = "MISS+FALSE"
    print(f"{verdict:<10} {outcome.scenario.name:<62} {outcome.media_seconds:5.1f} s "
          f"in {outcome.wall_seconds:4.1f} s", flush=True)
    if detail or bad or miss:
        for interval in miss:
            print(f"{'':<12}missed {interval.kind} {interval.start:.1f}-{interval.end:.1f}")
        shown = outcome.flags if detail else bad
        for flag in shown:
            end = _fmt(flag["end"], 1)
            print(f"{'':<12}flag {flag['kind']} {flag['severity']} "
                  f"{flag['start']:.1f}-{end} {flag['evidence'].get('metrics', {})}")


# --- main -------------------------------------------------------------------------------


def select(scenarios: Sequence[Scenario], quick: bool, kinds: set[str] | None
           ) -> list[Scenario]:
    """The quick subset and/or the scenarios for some kinds (clean clips always)."""
    chosen = [s for s in scenarios if s.quick or not quick]
    if kinds:
        chosen = [s for s in chosen if s.clean or s.kinds() & kinds
                  or {i.kind for i in s.excused()} & kinds]
    return chosen


def library(which: str, phones: int) -> tuple[list[Scenario], list[str]]:
    """The base library (still photos), the hard one, or both."""
    scenarios: list[Scenario] = []
    notes: list[str] = []
    if which in ("all", "base"):
        base, base_notes = lib.library(phones)
        scenarios += base
        notes += base_notes
    if which in ("all", "hard"):
        extra, extra_notes = hard.library()
        scenarios += extra
        notes += extra_notes
    return scenarios, notes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one or two scenarios per kind and one clean clip")
    parser.add_argument("--kinds", default="",
                        help="comma-separated flag kinds to score (default: every video kind)")
    parser.add_argument("--fps", type=int, default=15, help="frame rate of the clips written")
    parser.add_argument("--phones", type=int, default=12,
                        help="phone models in the phone_detected scenarios")
    parser.add_argument("--keep", type=Path, help="write the clips into this folder")
    parser.add_argument("--detail", action="store_true", help="every flag of every clip")
    parser.add_argument("--set", choices=("all", "base", "hard"), default="all",
                        help="base: still photos (tests/scenarios.py); hard: moving heads, "
                             "real video, VP8 at 150 kbit/s, low light (bench/scenarios.py)")
    return parser.parse_args(argv)


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    kinds = {k.strip() for k in args.kinds.split(",") if k.strip()} or None
    unknown = (kinds or set()) - set(lib.VIDEO_KINDS)
    if unknown:
        print(f"unknown kinds: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    print("command: python -m bench.accuracy " + " ".join(sys.argv[1:] if argv is None
                                                          else argv))
    logging.basicConfig(level=logging.ERROR)
    config = load_config()  # the shipped config; PROCTOR_* variables try other settings
    detectors = build_detectors(config.detectors)
    print(f"detectors: {', '.join(d.name for d in detectors)}; cpus: {os.cpu_count()}; "
          f"analysis fps {config.pipeline.analysis_fps:g}")
    scenarios, notes = library(args.set, args.phones)
    for note in notes:
        print(f"note: {note}")
    chosen = select(scenarios, args.quick, kinds)
    outcomes = await _run_all(chosen, config, detectors, args)
    scored = score(outcomes, sorted(kinds) if kinds else lib.VIDEO_KINDS)
    print_table(scored, rule_seconds(config))
    print_breakdown(outcomes)
    print_clean(outcomes)
    hard_names = {s.name for s in hard.library()[0]} if args.set == "all" else set()
    if hard_names and any(o.scenario.name in hard_names for o in outcomes):
        harder = [o for o in outcomes if o.scenario.name in hard_names]
        print("\nthe hard set alone (moving heads, real video, VP8 150 kbit/s, low light):")
        print_table(score(harder, sorted(kinds) if kinds else lib.VIDEO_KINDS),
                    rule_seconds(config))
        print_clean(harder, "hard clean clips")
    media = sum(o.media_seconds for o in outcomes)
    wall = sum(o.wall_seconds for o in outcomes)
    print(f"{len(outcomes)} clips, {media / 60:.1f} min of video analysed in {wall:.0f} s "
          f"({media / wall:.0f}× real time)")
    return 0


async def _run_all(chosen: Sequence[Scenario], config: Config, detectors: list[Detector],
                   args: argparse.Namespace) -> list[Outcome]:
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="proctor-accuracy-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for scenario in chosen:
            try:
                outcome = await run_scenario(scenario, config, detectors, folder, args.fps)
            except pytest.skip.Exception as exc:  # photos.py skips when it cannot fetch
                print(f"{'left out':<10} {scenario.name}: {exc}")
                continue
            print_outcome(outcome, args.detail)
            outcomes.append(outcome)
    return outcomes


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
