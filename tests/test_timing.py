"""The timer, the rounds and the statistics they rest on, against a clock the test controls.

A ``Machine`` is a fake computer: participants whose calls take known durations, a drift that
slows or speeds the whole machine over time, and seeded noise; its clock advances only by the
work done. What the timer reports can then be checked exactly — a wrong median, interval,
grouping of calls or stopping rule fails here.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import wilcoxon

from convbench.measure.stats import (
    holm,
    mann_whitney_p,
    median_ci,
    min_mann_whitney_p,
    min_wilcoxon_p,
    paired_ratio,
    wilcoxon_p,
)
from convbench.measure.timing import Rounds, TimingConfig, measure_rounds


class Machine:
    """A clock that advances by the work it is given: ``number`` calls of a participant take
    ``number × duration × drift(now) × noise`` seconds, and the two calls that follow another
    participant's take ``cold`` times as long (the caches they find are the other's)."""

    def __init__(
        self,
        drift: Callable[[float], float] = lambda t: 1.0,
        noise: float = 0.0,
        seed: int = 0,
        cold: float = 1.0,
    ) -> None:
        self.t = 0.0
        self.drift = drift
        self.noise = noise
        self.cold = cold
        self.rng = random.Random(seed)
        self.calls: list[tuple[str, int]] = []

    def now(self) -> float:
        return self.t

    def _since_switch(self, name: str) -> int:
        """Calls ``name`` made since another participant's, before the one being made."""
        since = 0
        for who, number in reversed(self.calls[:-1]):
            if who != name:
                break
            since += number
        return since

    def participant(self, name: str, duration: float, fail_at: int | None = None):  # type: ignore[no-untyped-def]
        def sample(number: int) -> float:
            self.calls.append((name, number))
            if fail_at is not None and sum(n == name for n, _ in self.calls) >= fail_at:
                raise RuntimeError(f"{name} broke")
            factor = math.exp(self.rng.gauss(0, self.noise)) if self.noise else 1.0
            cold = (self.cold - 1) * max(0, min(number, 2 - self._since_switch(name)))
            seconds = (number + cold) * duration * self.drift(self.t) * factor
            self.t += seconds
            return seconds

        return sample


def _rounds(r: Rounds) -> int:
    """How many rounds were taken (a participant that left early took part in fewer)."""
    return max(t.repeats for t in r.timings.values())


CFG = TimingConfig(budget_s=1.0, warmup_s=0.01, min_samples=5, rel_precision=0.02)


def test_a_sample_is_the_time_of_one_call() -> None:
    m = Machine()
    r = measure_rounds({"a": m.participant("a", 1e-4)}, CFG, now=m.now)
    t = r.timings["a"]
    assert t.number == 10  # 10 calls of 0.1 ms make the 1 ms a sample must last at least
    assert {n for name, n in m.calls[-t.repeats :]} == {10}
    assert t.median_s == pytest.approx(1e-4) and t.min_s == pytest.approx(1e-4)
    assert t.mean_s == pytest.approx(1e-4) and t.iqr_s == pytest.approx(0, abs=1e-12)


def test_long_calls_are_not_grouped() -> None:
    m = Machine()
    t = measure_rounds({"a": m.participant("a", 5e-3)}, CFG, now=m.now).timings["a"]
    assert t.number == 1 and t.median_s == pytest.approx(5e-3)


def test_precise_results_stop_after_twice_the_minimum() -> None:
    m = Machine()  # no noise: the interval has zero width at once
    t = measure_rounds({"a": m.participant("a", 2e-3)}, CFG, now=m.now).timings["a"]
    assert t.repeats == 2 * CFG.min_samples


def test_noise_that_never_settles_stops_at_the_budget() -> None:
    m = Machine(noise=0.5, seed=3)
    cfg = TimingConfig(budget_s=1.0, warmup_s=0.01, rel_precision=0.0, max_samples=10_000)
    r = measure_rounds({"a": m.participant("a", 1e-2), "b": m.participant("b", 1e-2)}, cfg,
                       now=m.now)  # fmt: skip
    # Two participants: a budget of 2 s; a turn is one untimed call and three timed ones, so
    # each round costs about 80 ms: ~25 rounds. The clock also ran the warm-ups (~20-40 ms).
    assert 2.0 <= m.t <= 2.0 + 0.2 and 15 < _rounds(r) < 40


def test_max_samples_caps_the_rounds() -> None:
    m = Machine(noise=0.3)
    cfg = TimingConfig(budget_s=100.0, rel_precision=0.0, max_samples=7, min_samples=3)
    r = measure_rounds({"a": m.participant("a", 1e-3)}, cfg, now=m.now)
    assert _rounds(r) == 7


def test_every_round_visits_every_participant_in_a_fresh_order() -> None:
    m = Machine(noise=0.2)
    names = ["a", "b", "c"]
    r = measure_rounds({n: m.participant(n, 1e-4) for n in names}, CFG, baseline="a",
                       now=m.now, rng=random.Random(1))  # fmt: skip
    # Warm-up calls are single; a turn's samples group 10 calls each, three to a turn. Nobody
    # leaves before twice the minimum rounds.
    timed = [name for name, number in m.calls if number > 1][: 3 * 3 * 2 * CFG.min_samples : 3]
    rounds = [tuple(timed[i : i + 3]) for i in range(0, len(timed), 3)]
    assert all(sorted(order) == names for order in rounds)
    assert len(set(rounds)) > 3  # not one fixed order
    assert _rounds(r) == r.timings["a"].repeats  # the baseline stays as long as anyone
    assert all(t.repeats <= _rounds(r) for t in r.timings.values())


def test_pairing_cancels_a_drift_that_unpaired_medians_carry() -> None:
    # Another process comes and goes every 50 ms, making the machine 3x slower while it runs;
    # b does 10 % more work than a. (The assertions hold for 38 of 40 seeds tried: a round
    # that straddles a change of speed is one wild ratio.)
    m = Machine(drift=lambda t: 3.0 if int(t / 0.05) % 2 else 1.0, noise=0.01)
    r = measure_rounds({"a": m.participant("a", 1e-3), "b": m.participant("b", 1.1e-3)},
                       CFG, baseline="a", now=m.now, rng=random.Random(2))  # fmt: skip
    s = r.speedup("b")
    assert s is not None and s.lo <= 1 / 1.1 <= s.hi and s.significant
    assert s.precision <= CFG.rel_precision
    lo, hi = median_ci(r.timings["a"].samples_s)  # unpaired, a's median is far less certain
    assert (hi - lo) / (2 * r.timings["a"].median_s) > 2 * s.precision
    assert r.speedup("a") is None  # the baseline has no speed-up over itself


def test_a_turn_is_timed_warm_after_the_others_left_the_caches_cold() -> None:
    # The first two calls after another participant's take twice as long: samples taken
    # straight after the switch would report up to 2 ms for a's 1 ms, and a wrong speed-up.
    m = Machine(cold=2.0)
    r = measure_rounds({"a": m.participant("a", 1e-3), "b": m.participant("b", 2e-3)}, CFG,
                       baseline="a", now=m.now, rng=random.Random(0))  # fmt: skip
    assert r.timings["a"].median_s == pytest.approx(1e-3)
    assert r.timings["b"].median_s == pytest.approx(2e-3)
    assert r.speedup("b").value == pytest.approx(0.5)  # type: ignore[union-attr]


def test_paired_interval_covers_the_true_ratio_95_percent_of_the_time() -> None:
    cfg = TimingConfig(budget_s=1.0, warmup_s=0.0, min_samples=20, rel_precision=0.0,
                       max_samples=40)  # fmt: skip
    covered = 0
    for seed in range(200):
        m = Machine(noise=0.1, seed=seed)
        r = measure_rounds({"a": m.participant("a", 1e-3), "b": m.participant("b", 1.05e-3)},
                           cfg, baseline="a", now=m.now, rng=random.Random(seed))  # fmt: skip
        s = r.speedup("b")
        assert s is not None
        covered += s.lo <= 1 / 1.05 <= s.hi
    # Order statistics of 40 ratios: a nominal 95 % (96 % exactly); min-max would give 100 %.
    assert 180 <= covered <= 198


def test_a_participant_that_raises_is_dropped_and_the_rest_stay_paired() -> None:
    m = Machine(noise=0.05)
    r = measure_rounds({"a": m.participant("a", 2e-3), "bad": m.participant("bad", 2e-3, 8),
                        "c": m.participant("c", 3e-3)}, CFG, baseline="a", now=m.now,
                       rng=random.Random(3))  # fmt: skip
    assert set(r.timings) == {"a", "c"} and str(r.errors["bad"]) == "bad broke"
    assert len(r.timings["a"].samples_s) == len(r.timings["c"].samples_s) == _rounds(r)
    assert r.speedup("c").lo <= 2 / 3 <= r.speedup("c").hi  # type: ignore[union-attr]


# --- statistics ------------------------------------------------------------------------------


def test_median_ci_picks_the_order_statistics() -> None:
    xs = [float(i) for i in range(100)]
    random.Random(0).shuffle(xs)
    # n = 100: ranks 50 ± 1.96·√100/2 = 50 ± 9.8 → the 40th and 60th smallest.
    assert median_ci(xs) == (40.0, 60.0)
    assert median_ci([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)


@given(st.lists(st.floats(1e-6, 1.0), min_size=1, max_size=60))
def test_median_ci_brackets_the_median(samples: list[float]) -> None:
    lo, hi = median_ci(samples)
    assert min(samples) <= lo <= statistics.median(samples) <= hi <= max(samples)


def test_paired_ratio_of_known_ratios() -> None:
    base = [1.0, 2.0, 4.0, 8.0, 16.0, 3.0, 5.0]
    r = paired_ratio([b * 1.5 for b in base], base)
    assert (r.value, r.lo, r.hi, r.n) == (pytest.approx(1.5),) * 3 + (7,)
    assert r.significant and r.inverse().value == pytest.approx(1 / 1.5)
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


def test_wilcoxon_p_is_scipys_on_the_log_ratios() -> None:
    rng = random.Random(5)
    a = [rng.uniform(1, 2) for _ in range(30)]
    b = [x * rng.uniform(0.95, 1.15) for x in a]
    expected = wilcoxon([math.log(y / x) for x, y in zip(a, b, strict=True)]).pvalue
    assert wilcoxon_p(b, a) == pytest.approx(expected)
    assert wilcoxon_p(a, a) == 1.0
    assert min_wilcoxon_p(5) == pytest.approx(2 / 32)


def test_mann_whitney_smallest_p() -> None:
    assert min_mann_whitney_p(3, 3) == pytest.approx(0.1)
    assert mann_whitney_p([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]) == pytest.approx(2 / 70)


def test_holm_step_down() -> None:
    # Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → monotone 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
