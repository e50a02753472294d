"""RpcMetrics: per-second buckets, aggregation by granularity, percentiles, retention."""

from __future__ import annotations

import itertools

import pytest

from confab.grpc_edge.metrics import BOUNDS_MS, GRANULARITIES, RpcMetrics, RpcPoint, parse_granularity

T0 = 1_699_999_200  # a multiple of 3600, so interval starts are easy to predict


def near_t0() -> float:
    """The clock for tests that record around T0: late enough that nothing has expired yet."""
    return float(T0 + 120)


def test_record_and_single_point() -> None:
    metrics = RpcMetrics(clock=near_t0)
    metrics.record("ProcessMessage", "OK", 0.002, now=T0 + 0.7)
    points = metrics.points(T0, T0 + 1, 1)
    assert len(points) == 1
    point = points[0]
    assert isinstance(point, RpcPoint)
    assert point.start == float(T0)
    assert (point.method, point.code, point.count) == ("ProcessMessage", "OK", 1)
    assert point.avg_ms == pytest.approx(2.0)
    # The percentile is the upper bound of the bucket holding 2 ms.
    assert point.p50_ms == point.p99_ms
    assert 2.0 <= point.p50_ms <= 2.0 * 1.5
    assert point.p50_ms in BOUNDS_MS


def test_points_are_split_by_method_and_code() -> None:
    metrics = RpcMetrics(clock=near_t0)
    metrics.record("ProcessMessage", "OK", 0.001, now=T0)
    metrics.record("ProcessMessage", "OK", 0.003, now=T0)
    metrics.record("ProcessMessage", "NOT_FOUND", 0.001, now=T0)
    metrics.record("GetConversationState", "OK", 0.001, now=T0)
    points = metrics.points(T0, T0 + 60, 60)
    counts = {(p.method, p.code): p.count for p in points}
    averages = {(p.method, p.code): p.avg_ms for p in points}
    assert counts == {
        ("GetConversationState", "OK"): 1,
        ("ProcessMessage", "NOT_FOUND"): 1,
        ("ProcessMessage", "OK"): 2,
    }
    assert averages[("ProcessMessage", "OK")] == pytest.approx(2.0)
    assert averages[("ProcessMessage", "NOT_FOUND")] == pytest.approx(1.0)
    assert averages[("GetConversationState", "OK")] == pytest.approx(1.0)
    # Sorted by interval, then method, then code.
    assert [(p.method, p.code) for p in points] == sorted((p.method, p.code) for p in points)


def test_aggregation_by_granularity() -> None:
    metrics = RpcMetrics(clock=near_t0)
    for offset in (0, 5, 9, 10, 59, 60, 61, 150):
        metrics.record("M", "OK", 0.001, now=T0 + offset)

    by_10s = [(p.start - T0, p.count) for p in metrics.points(T0, T0 + 3600, 10)]
    assert by_10s == [(0, 3), (10, 1), (50, 1), (60, 2), (150, 1)]

    by_minute = [(p.start - T0, p.count) for p in metrics.points(T0, T0 + 3600, 60)]
    assert by_minute == [(0, 5), (60, 2), (120, 1)]

    by_second = metrics.points(T0, T0 + 3600, 1)
    assert [p.start - T0 for p in by_second] == [0, 5, 9, 10, 59, 60, 61, 150]
    assert all(p.count == 1 for p in by_second)

    by_hour = metrics.points(T0, T0 + 3600, 3600)
    assert [(p.start, p.count) for p in by_hour] == [(float(T0), 8)]


def test_intervals_are_aligned_to_granularity_not_to_start() -> None:
    metrics = RpcMetrics(clock=near_t0)
    metrics.record("M", "OK", 0.001, now=T0 + 65)
    (point,) = metrics.points(T0 + 62, T0 + 120, 60)
    assert point.start == float(T0 + 60)


def test_time_range_is_half_open() -> None:
    metrics = RpcMetrics(clock=near_t0)
    for offset in range(10):
        metrics.record("M", "OK", 0.001, now=T0 + offset)
    total = sum(p.count for p in metrics.points(T0 + 3, T0 + 7, 1))
    assert total == 4  # seconds 3, 4, 5, 6
    assert metrics.points(T0 + 10, T0 + 20, 1) == []
    assert metrics.points(T0 - 10, T0, 1) == []
    assert sum(p.count for p in metrics.points(T0 - 100, T0 + 100, 60)) == 10


def test_fractional_now_falls_in_its_second() -> None:
    metrics = RpcMetrics(clock=near_t0)
    metrics.record("M", "OK", 0.001, now=T0 + 0.999)
    metrics.record("M", "OK", 0.001, now=T0 + 1.0)
    assert [(p.start, p.count) for p in metrics.points(T0, T0 + 2, 1)] == [
        (float(T0), 1),
        (float(T0 + 1), 1),
    ]


def test_percentiles_are_plausible() -> None:
    metrics = RpcMetrics(clock=near_t0)
    durations_ms = [1.0] * 98 + [500.0, 900.0]
    for d in durations_ms:
        metrics.record("M", "OK", d / 1000.0, now=T0)
    (point,) = metrics.points(T0, T0 + 1, 1)
    assert point.count == 100
    assert point.avg_ms == pytest.approx(sum(durations_ms) / 100)
    assert 1.0 <= point.p50_ms <= 1.5
    assert 500.0 <= point.p99_ms <= 500.0 * 1.5
    assert point.p99_ms >= point.p50_ms
    assert BOUNDS_MS[0] <= point.p50_ms <= BOUNDS_MS[-1]
    assert BOUNDS_MS[0] <= point.p99_ms <= BOUNDS_MS[-1]


def test_percentiles_merge_across_seconds() -> None:
    metrics = RpcMetrics(clock=near_t0)
    for i in range(50):
        metrics.record("M", "OK", 0.0001, now=T0 + i % 10)  # 0.1 ms
    for i in range(50):
        metrics.record("M", "OK", 0.1, now=T0 + 10 + i % 10)  # 100 ms
    (point,) = metrics.points(T0, T0 + 60, 60)
    assert point.count == 100
    assert 0.1 <= point.p50_ms <= 0.15
    assert 100.0 <= point.p99_ms <= 150.0
    assert point.avg_ms == pytest.approx(50.05)


@pytest.mark.parametrize("duration_ms", [0.0, 0.01, 0.05, 0.051, 3.7, 1234.5, 100_000.0])
def test_single_value_percentile_is_its_bucket_upper_bound(duration_ms: float) -> None:
    metrics = RpcMetrics(clock=near_t0)
    metrics.record("M", "OK", duration_ms / 1000.0, now=T0)
    (point,) = metrics.points(T0, T0 + 1, 1)
    assert point.p50_ms in BOUNDS_MS
    assert point.p50_ms >= duration_ms - 1e-9
    index = BOUNDS_MS.index(point.p50_ms)
    if index > 0:
        assert BOUNDS_MS[index - 1] < duration_ms + 1e-9


def test_values_beyond_the_largest_bound_are_clamped() -> None:
    metrics = RpcMetrics(clock=near_t0)
    metrics.record("M", "OK", 10_000.0, now=T0)  # 10^7 ms
    (point,) = metrics.points(T0, T0 + 1, 1)
    assert point.p50_ms == point.p99_ms == BOUNDS_MS[-1]
    assert point.avg_ms == pytest.approx(10_000_000.0)


def test_bounds_are_increasing_log_scale() -> None:
    assert BOUNDS_MS[0] == pytest.approx(0.05)
    assert all(b > a for a, b in itertools.pairwise(BOUNDS_MS))
    assert BOUNDS_MS[-1] > 100_000.0


def test_retention_expires_old_seconds() -> None:
    now = [float(T0)]
    metrics = RpcMetrics(retention_s=10, clock=lambda: now[0])
    metrics.record("M", "OK", 0.001, now=T0)
    metrics.record("M", "ERR", 0.001, now=T0 + 5)
    metrics.record("M", "OK", 0.001, now=T0 + 10)  # T0 is exactly at the edge: kept
    now[0] = T0 + 10
    assert metrics.totals() == {"OK": 2, "ERR": 1}
    metrics.record("M", "OK", 0.001, now=T0 + 11)  # now T0 is older than the window
    now[0] = T0 + 11
    assert metrics.totals() == {"OK": 2, "ERR": 1}
    assert metrics.points(T0, T0 + 1, 1) == []
    metrics.record("M", "OK", 0.001, now=T0 + 100)
    now[0] = T0 + 100
    assert metrics.totals() == {"OK": 1}
    assert [p.start for p in metrics.points(0, T0 + 1000, 1)] == [float(T0 + 100)]


def test_totals() -> None:
    metrics = RpcMetrics(clock=near_t0)
    assert metrics.totals() == {}
    metrics.record("A", "OK", 0.001, now=T0)
    metrics.record("B", "OK", 0.001, now=T0 + 1)
    metrics.record("A", "INVALID_ARGUMENT", 0.001, now=T0 + 2)
    metrics.record("A", "OK", 0.001, now=T0 + 2)
    assert metrics.totals() == {"OK": 3, "INVALID_ARGUMENT": 1}


def test_record_without_now_uses_the_clock() -> None:
    import time

    metrics = RpcMetrics()
    before = int(time.time())
    metrics.record("M", "OK", 0.001)
    after = int(time.time())
    points = metrics.points(before, after + 1, 1)
    assert sum(p.count for p in points) == 1


def test_empty_points() -> None:
    assert RpcMetrics(clock=near_t0).points(0, T0 * 2, 60) == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("", 60), ("1s", 1), ("10s", 10), ("1m", 60), ("5m", 300), ("15m", 900), ("1h", 3600), (" 1M ", 60)],
)
def test_parse_granularity(text: str, seconds: int) -> None:
    assert parse_granularity(text) == seconds


def test_parse_unknown_granularity() -> None:
    assert parse_granularity("2m") is None
    assert parse_granularity("fast") is None
    assert set(GRANULARITIES.values()) == {1, 10, 60, 300, 900, 3600}


def test_totals_exclude_calls_older_than_retention_when_idle() -> None:
    now = [float(T0)]
    metrics = RpcMetrics(retention_s=60, clock=lambda: now[0])
    metrics.record("M", "OK", 0.001)
    assert metrics.totals() == {"OK": 1}
    now[0] = T0 + 3600  # an hour without a call
    assert metrics.totals() == {}
