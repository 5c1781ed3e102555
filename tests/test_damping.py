"""Flap damping: threshold, exponential hold, cap, decay and forgiveness — fake clock."""

from __future__ import annotations

import math

import pytest

from client.damping import FlapDamper
from proto.config import Timers
from tests.fakes.clock import FakeClock, run_until

T = Timers()   # flap_threshold=3, flap_window=10 s, damp_initial=1 s, damp_max=60 s


@pytest.fixture
def clock():
    return FakeClock(0.0)


def flap(d: FlapDamper, clock: FakeClock, port: int = 1, down_for: float = 0.1, up_for: float = 0.1) -> bool:
    """One down->up cycle; returns whether the up transition started a hold."""
    d.observe(port, False, clock.advance(up_for))
    return d.observe(port, True, clock.advance(down_for))


def test_bring_up_and_flaps_up_to_threshold_are_not_damped(clock):
    d = FlapDamper(T)
    assert d.observe(1, True, clock.now) is False        # first up: bring-up, not a flap
    for _ in range(T.flap_threshold):
        assert flap(d, clock) is False
    assert not d.damped(1, clock.now)
    assert d.view(1, clock.now).recent_flaps == T.flap_threshold
    assert d.next_deadline() == math.inf


def test_one_flap_too_many_holds_for_damp_initial(clock):
    d = FlapDamper(T)
    d.observe(1, True, clock.now)
    for _ in range(T.flap_threshold):
        flap(d, clock)
    assert flap(d, clock) is True
    t_up = clock.now
    assert d.damped(1, clock.now)
    assert d.damped_until(1, clock.now) == pytest.approx(t_up + T.damp_initial)
    assert d.next_deadline() == pytest.approx(t_up + T.damp_initial)
    ended = run_until(clock, t_up + 5, d.tick, d.next_deadline)
    assert ended == [(pytest.approx(t_up + T.damp_initial), 1)]
    assert not d.damped(1, clock.now)
    assert d.view(1, clock.now).level == T.damp_initial   # still penalised: not yet decayed


def test_further_flaps_double_the_hold_up_to_the_cap(clock):
    d = FlapDamper(T)
    d.observe(1, True, clock.now)
    holds = []
    for _ in range(T.flap_threshold + 10):
        if flap(d, clock):
            holds.append(d.damped_until(1, clock.now) - clock.now)
    assert holds == pytest.approx([1, 2, 4, 8, 16, 32, 60, 60, 60, 60])
    assert d.view(1, clock.now).total_flaps == T.flap_threshold + 10


def test_flap_during_hold_extends_from_the_latest_up(clock):
    d = FlapDamper(T)
    d.observe(1, True, clock.now)
    for _ in range(T.flap_threshold + 1):
        flap(d, clock)
    first_until = d.damped_until(1, clock.now)
    flap(d, clock)   # while held: doubled and restarted
    assert d.damped_until(1, clock.now) == pytest.approx(clock.now + 2 * T.damp_initial)
    # The superseded expiry is not reported; only the real end of the hold is.
    ended = run_until(clock, clock.now + 10, d.tick, d.next_deadline)
    assert [port for _, port in ended] == [1]
    assert ended[0][0] > first_until


def test_slow_flaps_outside_the_window_are_never_damped(clock):
    d = FlapDamper(T)
    d.observe(1, True, clock.now)
    for _ in range(20):
        assert flap(d, clock, up_for=T.flap_window / T.flap_threshold) is False
    assert not d.damped(1, clock.now)


def test_penalty_decays_and_is_forgiven_after_quiet(clock):
    d = FlapDamper(T)
    d.observe(1, True, clock.now)
    for _ in range(T.flap_threshold + 4):      # holds 1, 2, 4, 8
        flap(d, clock)
    until = d.damped_until(1, clock.now)
    assert until == pytest.approx(clock.now + 8)
    clock.set(until + T.flap_window * 1.5)     # one full quiet window after the hold: 8 -> 4
    assert d.view(1, clock.now).level == pytest.approx(4)
    assert flap(d, clock) is True              # next flap doubles the decayed level: 8
    assert d.damped_until(1, clock.now) - clock.now == pytest.approx(8)
    clock.set(d.damped_until(1, clock.now) + T.flap_window * 5)   # 8 -> 0.25 < initial: forgiven
    assert d.view(1, clock.now).level == 0
    for _ in range(T.flap_threshold):          # the threshold applies again
        assert flap(d, clock) is False
    assert flap(d, clock) is True
    assert d.damped_until(1, clock.now) - clock.now == pytest.approx(T.damp_initial)


def test_ports_are_independent_and_reset_forgets(clock):
    d = FlapDamper(T)
    d.observe(1, True, clock.now)
    d.observe(2, True, clock.now)
    for _ in range(T.flap_threshold + 1):
        flap(d, clock, port=1)
    assert d.damped(1, clock.now) and not d.damped(2, clock.now)
    d.reset(1)
    assert not d.damped(1, clock.now)
    assert d.next_deadline() == math.inf
    assert d.tick(clock.now + 100) == []


def test_repeated_observations_are_not_transitions(clock):
    d = FlapDamper(T)
    for _ in range(10):
        d.observe(1, True, clock.advance(0.1))
        d.observe(1, True, clock.advance(0.1))
    assert d.view(1, clock.now).total_flaps == 0
