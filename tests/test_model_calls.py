"""Model calls as operators see them (``actors.model_calls``, ``runtime.model_figures``): each
failed call a WARNING line, rate-limited per provider and reason; every call counted for the
figures, which the edge adds up across shard processes and turns into the same histograms.

The shard-level tests run a real shard against the local OpenAI-compatible stand-in
(tools.model_standin); the histogram test records into a real OpenTelemetry SDK meter.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from confab.actors.model_calls import ModelCalls
from confab.grpc_edge.figures import LiveAnalyticsView
from confab.runtime.analytics import AnalyticsQuery, build_report
from confab.runtime.inspection import ShardStatus
from confab.runtime.model import ConversationKey
from confab.runtime.model_figures import (
    BOUNDS_S,
    CALLS,
    DURATION,
    FIRST_CHUNK,
    TOKENS,
    ModelCallCounts,
    ModelKey,
    histogram_records,
    histogram_stats,
)
from confab.runtime.models import (
    BUDGET,
    CANCELLED,
    NO_PROVIDER,
    ModelProvider,
    ModelSettings,
    TokenBudget,
    failure,
)
from confab.tools.model_standin import ModelStandIn, Script
from tests.test_generation import TENANT, Driver, ShardMaker
from tests.test_generation import flow_dir as flow_dir  # the helper flow's directory, a fixture
from tests.test_ownership import Clock

LOGGER = "confab.actors.model_calls"
KEY = ConversationKey("acme", "order-7")


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    """pytest's, with the shard's model log enabled: a tool run in-process by an earlier test may
    have configured logging with ``disable_existing_loggers`` (import-linter's CLI does)."""
    monkeypatch.setattr(logging.getLogger(LOGGER), "disabled", False)
    return caplog


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def http_500(elapsed_ms: float = 812.0) -> dict[str, object]:
    return failure("http_500", "HTTP 500", attempts=2, chunks=0, elapsed_ms=elapsed_ms, provider="local")


# The warnings --------------------------------------------------------------------------------


def test_a_failed_call_is_one_line_naming_provider_reason_conversation_and_elapsed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    calls = ModelCalls(3, clock=Clock())
    calls.finished(KEY, "local", http_500())
    (line,) = warnings(caplog)
    assert line == (
        "shard 3: model provider 'local' failed: http_500 (HTTP 500) for conversation acme/order-7"
        " after 812 ms"
    )


def test_an_outage_is_logged_once_per_provider_and_reason_per_window_with_what_went_unlogged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    clock = Clock()
    calls = ModelCalls(0, clock=clock, window_s=10.0)
    for _ in range(50):  # a provider that is down: every call fails within the window
        calls.finished(KEY, "local", http_500())
        clock.now += 0.1
    calls.finished(KEY, "local", failure("timeout", "no answer within 5s", attempts=1, elapsed_ms=5000.0))
    calls.finished(KEY, "other", http_500())
    assert len(warnings(caplog)) == 3  # one per (provider, reason)
    calls.flush()  # within the window: nothing to say yet
    assert len(warnings(caplog)) == 3
    clock.now += 10.0
    calls.finished(KEY, "local", http_500())  # the next window's first: says what went unlogged
    assert warnings(caplog)[-1].endswith("; 49 more like it not logged in the last 10s")
    calls.finished(KEY, "local", http_500())
    clock.now += 10.0
    calls.flush()  # the outage ended: the count of the last window is still told
    assert warnings(caplog)[-1] == (
        "shard 0: model provider 'local' failed: http_500, 1 more time(s) in 10s not logged one by one"
    )
    assert len(warnings(caplog)) == 5
    counts = {(f, p, i): v for f, p, i, v in calls.counts.totals() if f == CALLS}
    assert counts == {
        (CALLS, "local", "http_500"): 52,
        (CALLS, "local", "timeout"): 1,
        (CALLS, "other", "http_500"): 1,
    }


def test_a_cancelled_call_is_counted_not_logged_and_no_provider_is_neither(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    calls = ModelCalls(0, clock=Clock())
    calls.finished(
        KEY, "local", failure(CANCELLED, "cancelled after 3 chunk(s)", attempts=1, elapsed_ms=40.0)
    )
    calls.finished(KEY, "", failure(NO_PROVIDER, "no model provider is configured", attempts=0))
    assert warnings(caplog) == []
    assert [(f, p, i, v) for f, p, i, v in calls.counts.totals() if f == CALLS] == [
        (CALLS, "local", CANCELLED, 1.0)
    ]


# On a real shard -----------------------------------------------------------------------------


def on_standin(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn, tokens_per_day: int = 0
) -> Driver:
    provider = ModelProvider("standin", standin.url, "standin-model", timeout_s=5.0, retries=1)
    models = ModelSettings((provider,), TokenBudget(tokens_per_day))
    return Driver(make_shard(flow_dirs=(str(flow_dir),), models=models))


def model_figures(driver: Driver) -> dict[ModelKey, float]:
    return {(f, p, i): v for f, p, i, v in driver.shard.status().models}


def test_a_shard_logs_a_failing_provider_and_counts_every_call_by_outcome(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    standin.script = Script(fail_status=500)
    driver = on_standin(make_shard, flow_dir, standin)
    driver.say("c1", "hello")
    for n in range(3):
        result = driver.say("c1", f"explain {n}")
        assert "generate_failed:http_500" in result.actions_performed
    (line,) = warnings(caplog)  # three failures, one line
    assert line.startswith(
        f"shard 0: model provider 'standin' failed: http_500 (HTTP 500) for conversation {TENANT}/c1"
    )
    assert "explain" not in line  # never the prompt
    figures = model_figures(driver)
    assert figures[(CALLS, "standin", "http_500")] == 3
    assert sum(v for (f, _, i), v in figures.items() if f == DURATION and i.startswith("le:")) == 3
    assert (FIRST_CHUNK, "standin", "le:inf") not in figures and not any(f == TOKENS for f, _, _ in figures)

    standin.script = Script(text="We open at nine.")
    ok = driver.say("c2", "explain the hours")
    assert "generate:default" in ok.actions_performed
    figures = model_figures(driver)
    assert figures[(CALLS, "standin", "ok")] == 1
    assert figures[(TOKENS, "standin", "input")] == 20 and figures[(TOKENS, "standin", "output")] == 10
    assert sum(v for (f, _, i), v in figures.items() if f == FIRST_CHUNK and i.startswith("le:")) == 1
    assert sum(v for (f, _, i), v in figures.items() if f == DURATION and i.startswith("le:")) == 4


def test_a_refused_budget_is_counted_and_logged(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    standin.script = Script(text="Fine.")
    driver = on_standin(make_shard, flow_dir, standin, tokens_per_day=30)
    driver.say("c1", "hello")
    assert "generate:default" in driver.say("c1", "explain").actions_performed  # spends 30
    refused = driver.say("c1", "explain again")
    assert f"generate_failed:{BUDGET}" in refused.actions_performed
    assert model_figures(driver)[(CALLS, "standin", BUDGET)] == 1
    (line,) = warnings(caplog)
    assert "model provider 'standin' failed: budget" in line and "after 0 ms" in line


def test_without_a_provider_a_generation_is_no_call_counted_or_logged(
    make_shard: ShardMaker, flow_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    unconfigured = Driver(make_shard(flow_dirs=(str(flow_dir),)))
    unconfigured.say("c9", "hello")
    assert "generate_failed:no_provider" in unconfigured.say("c9", "explain").actions_performed
    assert unconfigured.shard.status().models == () and warnings(caplog) == []


# The figures at the edge ---------------------------------------------------------------------


def status(index: int, pid: int, models: ModelCallCounts) -> ShardStatus:
    return ShardStatus(index, 1, pid, 0.0, 0, 0, 0, 0, 0, 0, True, 0.0, "", 0, 0.0, models=models.totals())


def test_the_edge_rebuilds_the_shards_histograms_exactly_from_their_increases() -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    histogram = meter.create_histogram(DURATION, unit="s", explicit_bucket_boundaries_advisory=BOUNDS_S)
    view = LiveAnalyticsView()

    def record(grew: dict[ModelKey, float]) -> None:
        for figure, provider, seconds, times in histogram_records(grew):
            assert figure in (DURATION, FIRST_CHUNK)
            for _ in range(times):
                if figure == DURATION:
                    histogram.record(seconds, {"provider": provider})

    view.on_models = record
    shard_a, shard_b = ModelCallCounts(), ModelCallCounts()
    took = [0.07, 0.1, 0.1, 0.3, 0.31, 2.9, 3.0, 45.0, 200.0]
    for seconds in took[:5]:
        shard_a.add("local", {"ok": True, "attempts": 1, "elapsed_ms": seconds * 1000})
    view.update([status(0, 100, shard_a), status(1, 101, shard_b)])
    for seconds in took[5:]:
        shard_b.add("local", {"ok": True, "attempts": 1, "elapsed_ms": seconds * 1000})
    totals = view.update([status(0, 100, shard_a), status(1, 101, shard_b)]).models
    view.update([status(0, 100, shard_a)])  # the same report again adds nothing
    assert totals[(CALLS, "local", "ok")] == len(took)

    data = reader.get_metrics_data()
    assert data is not None
    (metric,) = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    (point,) = metric.data.data_points
    assert isinstance(point, HistogramDataPoint)
    expected = [0] * (len(BOUNDS_S) + 1)
    for seconds in took:
        expected[next((i for i, b in enumerate(BOUNDS_S) if seconds <= b), len(BOUNDS_S))] += 1
    assert list(point.bucket_counts) == expected
    assert point.count == len(took) and point.sum == pytest.approx(sum(took))
    stats = histogram_stats(totals, DURATION)["local"]
    assert stats["mean"] == pytest.approx(sum(took) / len(took))
    assert (stats["p50"], stats["p99"]) == (0.5, BOUNDS_S[-1])


# The conversation analytics ------------------------------------------------------------------


def analytics_totals(driver: Driver) -> dict[str, int]:
    now = time.time()
    query = AnalyticsQuery(TENANT, "helper", now - 3600, now + 60, 3600)
    (flow,) = build_report(query, driver.shard.store.analytics(query, now))["flows"]
    return dict(flow["totals"])


def test_a_fallback_with_no_provider_to_ask_is_no_generation_failure(
    make_shard: ShardMaker, flow_dir: Path
) -> None:
    driver = Driver(make_shard(flow_dirs=(str(flow_dir),)))
    driver.say("c1", "hello")
    for text in ("what is this?", "and that?", "explain"):
        driver.say("c1", text)
    totals = analytics_totals(driver)
    assert (totals["fallbacks"], totals["generations"], totals["generation_failures"]) == (2, 0, 0)


def test_a_fallback_whose_provider_fails_is_a_generation_failure(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn
) -> None:
    standin.script = Script(fail_status=503)
    driver = on_standin(make_shard, flow_dir, standin)
    driver.say("c1", "hello")
    assert "generate_failed:http_503" in driver.say("c1", "what is this?").actions_performed
    standin.script = Script(text="It is a helper.")
    assert "generative_fallback" in driver.say("c1", "and that?").actions_performed
    totals = analytics_totals(driver)
    assert (totals["fallbacks"], totals["generations"], totals["generation_failures"]) == (2, 1, 1)
    assert totals["generative_fallbacks"] == 1
