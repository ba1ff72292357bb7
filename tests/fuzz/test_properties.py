"""hypothesis properties of the flag tracker, the configuration and the tokens.

- The tracker, fed any samples of the shipped rule table (out of order, NaN and
  infinite values, breaks, the session's end), keeps the SPEC's promises: a flag never
  changes kind, its severity only rises while open, ``end >= start``, at most one open
  flag per kind, and every flag closes at a media time it was fed.
- Any ``PROCTOR_*`` override of any key either loads or fails with a ConfigError that
  names the key, and what loads holds no NaN or infinite number.
- Any string is a valid token or a clean 401; a tampered or expired token is refused.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import math
import os
import typing
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proctor import config as config_module
from proctor.config import Config, ConfigError, default_config_path, load_config
from proctor.flags.model import FlagKind
from proctor.flags.rules import Rule, rules_from_config
from proctor.flags.tracker import FlagChange, FlagEvent, FlagTracker
from signaling.auth import Principal, Role, TokenSigner
from signaling.errors import ApiError
from tests.fuzz.conftest import CASES

RULES = rules_from_config(load_config(env={}).flags.rules)
SIGNALS = sorted({name for rule in RULES for name in rule.signals})
THRESHOLDS = sorted({level.threshold for rule in RULES for level in rule.levels})
# CI replays the same examples each run; FUZZ_RANDOM=1 explores, FUZZ_EXAMPLES scales.
SCALE = int(os.environ.get("FUZZ_EXAMPLES", "20")) / 20
DERANDOMIZE = os.environ.get("FUZZ_RANDOM") != "1"
PROPERTY = settings(max_examples=round(300 * SCALE), deadline=None, database=None,
                    derandomize=DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow])


def _count(name: str) -> None:
    CASES[f"properties: {name}"] += 1


# The flag tracker ----------------------------------------------------------------------

# A value near a threshold (where flags open and rise), anywhere, or no number at all.
VALUES = st.one_of(st.sampled_from(THRESHOLDS).flatmap(
    lambda t: st.sampled_from([t - 1, t, t + 1, t + 50])),
    st.floats(allow_nan=True, allow_infinity=True))
SAMPLE = st.tuples(st.floats(-0.5, 2.0), st.dictionaries(st.sampled_from(SIGNALS), VALUES,
                                                         max_size=4))
PRESENCE = frozenset({FlagKind.FACE_ABSENT, FlagKind.HEAD_TURNED, FlagKind.GAZE_AWAY})
STEP = st.one_of(SAMPLE, SAMPLE, SAMPLE, SAMPLE, st.just("pause"), st.just("resume"))


class FlagLedger:
    """Every event the tracker gave, checked against the SPEC as it comes."""

    def __init__(self) -> None:
        self.kind: dict[str, str] = {}
        self.rank: dict[str, int] = {}
        self.closed: set[str] = set()
        self.open_by_kind: dict[str, str] = {}

    def see(self, events: list[FlagEvent], latest: float) -> None:
        for event in events:
            flag, fid = event.flag, event.flag.flag_id
            assert self.kind.setdefault(fid, str(flag.kind)) == str(flag.kind)
            assert 0 <= flag.start <= latest + 1e-9
            if event.change == FlagChange.CLOSED:
                self._closed(fid, flag.start, flag.end, str(flag.kind), latest)
            else:
                assert fid not in self.closed and flag.end is None
                assert flag.severity.rank >= self.rank.get(fid, 0), "severity fell"
                if event.change == FlagChange.OPENED:
                    assert self.open_by_kind.setdefault(str(flag.kind), fid) == fid, \
                        "two open flags of one kind"
            self.rank[fid] = max(self.rank.get(fid, 0), flag.severity.rank)
            if event.change != FlagChange.CLOSED:
                assert flag.severity.rank == self.rank[fid]

    def _closed(self, fid: str, start: float, end: float | None, kind: str,
                latest: float) -> None:
        assert end is not None and start <= end <= latest + 1e-9, (start, end, latest)
        assert math.isfinite(end)
        self.closed.add(fid)  # an instant flag that merged later events closes again
        if self.open_by_kind.get(kind) == fid:
            del self.open_by_kind[kind]


def _feed(steps: list[Any]) -> tuple[FlagLedger, FlagTracker]:
    tracker = FlagTracker("s", "c", RULES, with_clips=True, instant_merge_seconds=2.0,
                          instant_clip_seconds=5.0)
    ledger, t, latest = FlagLedger(), 0.0, 0.0
    for step in steps:
        if step == "pause":
            ledger.see(tracker.pause(PRESENCE, latest), latest)
        elif step == "resume":
            tracker.resume(PRESENCE)
        else:
            dt, signals = step
            t = max(0.0, t + dt)  # a negative dt: a sample a little out of order
            latest = max(latest, t)
            ledger.see(tracker.update(t, signals), latest)
    ledger.see(tracker.close_all(latest), latest)
    return ledger, tracker


@PROPERTY
@given(st.lists(STEP, max_size=120))
def test_tracker_keeps_the_flag_promises(steps: list[Any]) -> None:
    _count("flag tracker")
    ledger, tracker = _feed(steps)
    assert tracker.open_flags == []
    assert not ledger.open_by_kind, "a flag stayed open after the session's end"


@PROPERTY
@given(st.sampled_from([r for r in RULES if not r.instant]), st.floats(0.05, 0.5),
       st.integers(10, 200))
def test_a_held_condition_flags_and_closes_at_the_last_time_it_held(
        rule: Rule, step: float, samples: int) -> None:
    """Holding the highest level for longer than it needs opens a flag of that kind,
    at the highest severity, which closes at the last sample that held."""
    _count("flag tracker")
    top = rule.levels[-1]
    value = top.threshold + (1 if top.op in (">", ">=") else -1)
    if top.op == "==":
        value = top.threshold
    tracker = FlagTracker("s", "c", (rule,))
    events: list[FlagEvent] = []
    times = [i * step for i in range(samples)]
    for t in times:
        events += tracker.update(t, {rule.signal: value})
    events += tracker.close_all(times[-1] + 100)
    if times[-1] + 1e-6 < top.seconds:
        return  # not held long enough to reach the level
    assert {e.flag.kind for e in events} == {rule.kind}
    closed = [e.flag for e in events if e.change == FlagChange.CLOSED]
    assert len(closed) == 1 and closed[0].severity == top.severity
    assert closed[0].end == pytest.approx(times[-1])


# Configuration ---------------------------------------------------------------------------

def _leaf_keys(cls: type[Any], prefix: str = "") -> list[str]:
    """Every dotted key of the configuration tree (a section's own keys under it)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        hint = hints[f.name]
        options = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        if isinstance(options[0], type) and dataclasses.is_dataclass(options[0]):
            keys += _leaf_keys(options[0], key + ".")
        keys.append(key)
    return keys


CONFIG_KEYS = _leaf_keys(Config)
ENV_VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["[", "{", "]", "- x", ":", "a: b: c", "!!python/object:os.system",
                     "&a [*a]", ".nan", ".inf", "-.inf", "1e400", "0x1F", "true", "~",
                     "auto", "-1", "0", "1,2,3", "[1, [2]]", "{a: 1}", "2026-01-01",
                     "'unterminated", "\"x", "%", "@x", "`", "*"]),
    st.integers().map(str), st.floats().map(repr))


# The shipped config.yaml, parsed once: pure-Python YAML takes ~0.1 s a parse, and the
# file is not what varies here (the environment is).
_DEFAULTS = config_module._read_yaml(default_config_path())


def _load(env: dict[str, str]) -> Config:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config_module, "_read_yaml", lambda path: copy.deepcopy(_DEFAULTS))
        return load_config(env=env)


def _names_key(exc: ConfigError, key: str) -> bool:
    """The error is about the key: its own (or one inside it), or a key of the same
    section checked against it by name ("must be at least verify_every_seconds")."""
    if exc.key.startswith(key) or key.startswith(exc.key) or key in str(exc):
        return True
    section, _, leaf = key.rpartition(".")
    return exc.key.rpartition(".")[0] == section and leaf in str(exc)


@settings(PROPERTY, max_examples=round(600 * SCALE))
@given(st.sampled_from(CONFIG_KEYS), ENV_VALUES)
def test_any_env_override_loads_or_names_its_key(key: str, value: str) -> None:
    _count("config overrides")
    name = "PROCTOR_" + key.upper().replace(".", "__")
    try:
        config = _load({name: value})
    except ConfigError as exc:
        assert _names_key(exc, key), (name, value, str(exc))
        return
    assert _finite(config), (name, value)


def _finite(node: Any) -> bool:
    """No NaN or infinite number anywhere in the loaded tree."""
    if isinstance(node, float):
        return math.isfinite(node)
    if dataclasses.is_dataclass(node):
        return all(_finite(getattr(node, f.name)) for f in dataclasses.fields(node))
    if isinstance(node, tuple):
        return all(_finite(v) for v in node)
    return True


# Tokens --------------------------------------------------------------------------------

SIGNER = TokenSigner(b"property secret", 3600, 7200)
CLAIMS = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                      lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                      max_leaves=10)
# Mostly well-formed enough to reach each later check: a real role, a number expiry.
CLAIM_SETS = st.fixed_dictionaries(
    {"r": st.sampled_from([r.value for r in Role]) | CLAIMS,
     "s": st.lists(st.text(max_size=4), max_size=2) | CLAIMS,
     "e": st.integers(0, 2**62) | st.floats() | CLAIMS},
    optional={"i": CLAIMS, "t": CLAIMS, "x": CLAIMS}) | CLAIMS


def _verify(token: str) -> Principal | None:
    """The principal, or None for a clean refusal (401 with a code); anything else is
    raised as it came."""
    try:
        return SIGNER.verify(token)
    except ApiError as exc:
        assert exc.status == 401 and exc.code in ("invalid_token", "token_expired")
        return None


def _signed(payload: bytes) -> str:
    text = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return f"{text}.{SIGNER._sign(text)}"


@PROPERTY
@given(st.text() | st.binary().map(lambda b: b.decode("latin-1")))
def test_any_string_is_a_token_or_a_clean_refusal(text: str) -> None:
    _count("tokens")
    assert _verify(text) is None  # nothing unsigned is valid


@PROPERTY
@given(CLAIM_SETS)
def test_any_signed_claims_are_a_principal_or_a_clean_refusal(claims: Any) -> None:
    """Even a payload under the server's own signature is checked, not trusted blindly
    (a coding error on the issuing side must not turn every request into a 500)."""
    _count("tokens")
    principal = _verify(_signed(json.dumps(claims).encode()))
    if principal is not None:
        assert principal.role in (Role.CANDIDATE, Role.PROCTOR)
        assert all(isinstance(s, str) for s in principal.sessions)


@PROPERTY
@given(st.sampled_from([Role.CANDIDATE, Role.PROCTOR]), st.lists(st.text(max_size=8),
                                                                 max_size=3),
       st.data())
def test_tampered_tokens_are_refused(role: Role, sessions: list[str], data: Any) -> None:
    _count("tokens")
    token, _ = SIGNER.issue(role, sessions)
    assert _verify(token) is not None
    # The token holds a random id, so what is drawn must not depend on its characters
    # (hypothesis replays draws): a position as a share of the length, and a
    # replacement that is moved on by one when it happens to equal the original.
    index = min(len(token) - 1, int(data.draw(st.floats(0, 1)) * len(token)))
    choices = "ABCxyz019-_.="
    pick = data.draw(st.integers(0, len(choices) - 1))
    char = choices[pick] if choices[pick] != token[index] else choices[pick - 1]
    assert _verify(token[:index] + char + token[index + 1:]) is None
    assert _verify(token + data.draw(st.text(min_size=1, max_size=4))) is None


@PROPERTY
@given(st.sampled_from([Role.CANDIDATE, Role.PROCTOR]), st.floats(0, 4e9),
       st.floats(1, 1e6))
def test_expired_tokens_are_refused(role: Role, issued: float, late: float) -> None:
    _count("tokens")
    token, expires = SIGNER.issue(role, ["s1"], now=issued)
    assert SIGNER.verify(token, now=expires - 1).sessions == frozenset({"s1"})
    with pytest.raises(ApiError) as refused:
        SIGNER.verify(token, now=expires + late)
    assert refused.value.code == "token_expired"


def test_the_properties_saw_flags() -> None:
    """Guard against a vacuous tracker property: the samples above do open flags."""
    steps = [(0.2, {SIGNALS[0]: v}) for v in [1e9] * 100]
    ledger, _ = _feed(steps)
    kinds = Counter(ledger.kind.values())
    assert kinds, "the shipped table opened no flag on an extreme signal"
