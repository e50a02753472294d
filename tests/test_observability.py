"""One set of metric names, and a dashboard over them: a real server with ``--metrics-listen`` on a
free loopback port, traffic through it (the analytics dialogues among it), then

- GetMetrics and the Prometheus endpoint serve the same figures under the same names (by the
  Prometheus convention: dots to underscores, a unit suffix, ``_total`` for counters), and
  agree with each other and with Admin GetAnalytics on the analytics counts;
- every metric a PromQL query of the Grafana dashboard (docs/grafana/confab.json) names is
  one the server really exports;
- model calls (to a local OpenAI-compatible stand-in, tools.model_standin) are in both, by
  provider and outcome, with their latency histograms; the server warns at start of a
  provider whose key's variable is unset, and of each failing call, never with a prompt.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from confab.protos import admin_pb2 as admin
from confab.protos import admin_pb2_grpc as admin_grpc
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.tools.model_standin import ModelStandIn, Script
from tests.test_analytics_server import TTL_S, Analytics, as_, come_back, play_dialogues, send
from tests.test_generation import FLOW as HELPER_FLOW

pytestmark = pytest.mark.integration  # a server

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "confab.json"
UNIT_SUFFIXES = ("_seconds", "_milliseconds", "_bytes")


UNSET_KEY = "CONFAB_TEST_KEY_NOBODY_SET"
ANSWER = Script(text="We open at nine.")
FAILING = Script(fail_status=500)


@pytest.fixture(scope="module")
def standin() -> Iterator[ModelStandIn]:
    with ModelStandIn() as server:
        # What the user asked last says which: the history before it holds earlier asks too.
        server.choose = lambda body: FAILING if "broken" in body["messages"][-1]["content"] else ANSWER
        yield server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, standin: ModelStandIn) -> Iterator[Analytics]:
    assert UNSET_KEY not in os.environ
    analytics = Analytics(
        tmp_path_factory.mktemp("observability"),
        flows_added={"helper.yaml": HELPER_FLOW},
        config_added=(
            "models:\n  providers:\n"
            f"    - {{name: standin, base_url: '{standin.url}', model: m, retries: 0, timeout_s: 10}}\n"
            f"    - {{name: keyless, base_url: '{standin.url}', model: m, api_key_env: {UNSET_KEY}}}\n"
        ),
    )
    try:
        analytics.server.start()
        with analytics.server.channel() as channel:
            stub = pb_grpc.MCPEngineStub(channel)
            send(stub, "tenant-a", "model-1", "helper", "hello")
            for text in ("explain the hours", "explain it broken", "explain it broken again", "explain more"):
                send(stub, "tenant-a", "model-1", "helper", text)
            play_dialogues(stub)
            for _ in range(4):  # a slot given up, so that every figure has a series to show
                send(stub, "tenant-a", "giveup-1", "pizza", "purple", payload="ORDER" if _ == 0 else "")
            time.sleep(TTL_S + 0.5)
            come_back(stub)
            with pytest.raises(grpc.RpcError):  # an error status too, for the error panels
                stub.GetConversationState(
                    pb.GetConversationStateRequest(
                        tenant_context={"tenant_id": "tenant-a"}, conversation_id="none"
                    ),
                    metadata=as_("app-a"),
                )
        yield analytics
    finally:
        analytics.close()


def scrape(port: int) -> list[Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return list(text_string_to_metric_families(response.read().decode()))


def scraped_until(port: int, wanted: set[str]) -> list[Any]:
    """The scrape once every family of ``wanted`` is in it (the shards' figures reach the edge
    with their status, every second), or the last one after 15 s."""
    deadline = time.monotonic() + 15
    while True:
        families = scrape(port)
        if wanted <= {_plain(f.name) for f in families} or time.monotonic() > deadline:
            return families
        time.sleep(0.25)


def _plain(prometheus_name: str) -> str:
    """A Prometheus family's name as the instrument's, dots as underscores: no unit, no _total."""
    name = prometheus_name.removesuffix("_total")
    for suffix in UNIT_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def test_getmetrics_and_prometheus_serve_the_same_names(served: Analytics) -> None:
    with served.server.channel() as channel:
        report = pb_grpc.MCPEngineStub(channel).GetMetrics(pb.GetMetricsRequest(), metadata=as_("operator"))
    served_names = {m.name.replace(".", "_") for m in report.metrics}
    assert len(served_names) == len(report.metrics) >= 20
    families = scraped_until(served.metrics_port, served_names)
    exported = {_plain(f.name) for f in families if f.name.startswith("confab_")}
    assert exported == served_names, (
        f"only in GetMetrics: {sorted(served_names - exported)}; "
        f"only on the Prometheus endpoint: {sorted(exported - served_names)}"
    )


def samples(families: list[Any], name: str) -> list[Any]:
    return [s for f in families for s in f.samples if s.name == name]


def test_the_analytics_figures_agree_everywhere(served: Analytics) -> None:
    with served.server.channel() as channel:
        stored = admin_grpc.AdminStub(channel).GetAnalytics(
            admin.GetAnalyticsRequest(tenant_id="tenant-a"), metadata=as_("admin-a")
        )
        pizza = next(f for f in stored.flows if f.flow_id == "pizza")
        engine = pb_grpc.MCPEngineStub(channel)
        own = engine.GetMetrics(
            pb.GetMetricsRequest(metric_names=["confab.analytics.turns", "confab.analytics.webhook_calls"]),
            metadata=as_("app-a"),
        )
        turns, calls = own.metrics
        assert {p.attributes["tenant"] for p in turns.points} == {"tenant-a"}  # a tenant's key: its own
        assert sum(p.value for p in turns.points if p.attributes["flow"] == "pizza") == pizza.totals.turns
        failed = [p for p in calls.points if p.attributes["outcome"] == "failed"]
        assert [(p.attributes["webhook"], p.value) for p in failed] == [("price", 1.0)]
        other = engine.GetMetrics(
            pb.GetMetricsRequest(metric_names=["confab.analytics.turns"]), metadata=as_("app-b")
        )
        assert {p.attributes["tenant"] for p in other.metrics[0].points} == {"tenant-b"}
    families = scraped_until(served.metrics_port, {"confab_analytics_turns"})
    scraped = sum(
        s.value
        for s in samples(families, "confab_analytics_turns_total")
        if s.labels["tenant"] == "tenant-a" and s.labels["flow"] == "pizza"
    )
    assert scraped == pizza.totals.turns == 17
    abandoned = samples(families, "confab_analytics_sessions_abandoned_total")
    assert [(s.labels["flow"], s.labels["state"], s.value) for s in abandoned] == [("quick", "ask", 1.0)]


def test_every_metric_of_the_dashboard_is_exported(served: Analytics) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = list(_expressions(dashboard))
    assert len(expressions) >= 20
    named = {m for e in expressions for m in re.findall(r"\bconfab_[a-z0-9_]+", e)}
    families = scraped_until(
        served.metrics_port, {_plain(re.sub(r"_(bucket|sum|count)$", "", n)) for n in named}
    )
    exported = {s.name for f in families for s in f.samples}
    missing = sorted(named - exported)
    assert not missing, f"the dashboard names metrics the server does not export: {missing}"
    # and it covers what it is for: RPC health, the shards, the conversation analytics, the models
    for prefix in ("confab_rpc_", "confab_shard_", "confab_link_", "confab_analytics_", "confab_model_"):
        assert any(n.startswith(prefix) for n in named), prefix


def test_model_calls_agree_in_getmetrics_and_prometheus(served: Analytics, standin: ModelStandIn) -> None:
    names = ["confab.model.calls", "confab.model.duration", "confab.model.first_chunk", "confab.model.tokens"]
    with served.server.channel() as channel:
        report = pb_grpc.MCPEngineStub(channel).GetMetrics(
            pb.GetMetricsRequest(metric_names=names), metadata=as_("operator")
        )
    calls, duration, first_chunk, tokens = report.metrics
    by_outcome = {(p.attributes["provider"], p.attributes["outcome"]): p.value for p in calls.points}
    assert by_outcome == {("standin", "ok"): 2.0, ("standin", "http_500"): 2.0}
    assert len(standin.received()) == 4  # one request per call: retries 0
    stats = {p.attributes["stat"]: p.value for p in duration.points if p.attributes["provider"] == "standin"}
    assert set(stats) == {"mean", "p50", "p99"} and 0 < stats["mean"] <= stats["p99"]
    assert {p.attributes["provider"] for p in first_chunk.points} == {"standin"}
    spent = {p.attributes["type"]: p.value for p in tokens.points}
    assert spent == {"input": 40.0, "output": 20.0}  # the stand-in's usage, twice

    families = scraped_until(served.metrics_port, {"confab_model_calls", "confab_model_duration"})
    scraped = {
        (s.labels["provider"], s.labels["outcome"]): s.value
        for s in samples(families, "confab_model_calls_total")
    }
    assert scraped == by_outcome
    (count,) = [s.value for s in samples(families, "confab_model_duration_seconds_count")]
    (total,) = [s.value for s in samples(families, "confab_model_duration_seconds_sum")]
    assert count == 4 and total == pytest.approx(stats["mean"] * 4)
    buckets = [
        s for s in samples(families, "confab_model_duration_seconds_bucket") if s.labels["le"] == "+Inf"
    ]
    assert [b.value for b in buckets] == [4.0]


def test_the_server_warns_of_an_unset_key_at_start_and_of_each_failing_provider(served: Analytics) -> None:
    output = "".join(served.server.output)
    (unset,) = [line for line in output.splitlines() if UNSET_KEY in line]
    assert "model provider 'keyless'" in unset and "WARNING" in unset
    failed = [line for line in output.splitlines() if "model provider 'standin' failed" in line]
    assert len(failed) == 1  # two failures within the window: one line
    assert "http_500 (HTTP 500) for conversation tenant-a/model-1 after" in failed[0]
    assert "broken" not in output  # never the prompt


def _expressions(node: Any) -> Iterator[str]:
    """Every PromQL expression of a dashboard: panel targets and template variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item)
