"""The model client (runtime.models) against a local OpenAI-compatible stand-in: streams, the
whole answer at once, retries with one idempotency key (and the waits a Retry-After header asks
for), every way a call fails, the call's overall deadline, cancellation, and the key kept out of
everything but the Authorization header; and the config's ``models``."""

from __future__ import annotations

import email.utils
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from confab.runtime.config import ConfabConfig, ConfigError, load_config
from confab.runtime.models import ModelClient, ModelProvider, ModelResult, tokens_spent
from confab.runtime.outbound import IDEMPOTENCY_HEADER, RETRY_PAUSES_S, retry_after_s
from confab.tools.model_standin import DEFAULT_USAGE, WAIT_S, ModelStandIn, Script
from confab.tools.serve import model_settings

REQUEST: dict[str, Any] = {
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}],
    "idempotency_key": "key-1234",
}


def provider(standin: ModelStandIn, **options: Any) -> ModelProvider:
    settings: dict[str, Any] = {"timeout_s": 5.0, "retries": 1, **options}
    return ModelProvider("local", standin.url, "standin-model", **settings)


def ask(
    client: ModelClient, request: dict[str, Any] | None = None, cancel: threading.Event | None = None
) -> tuple[ModelResult, list[str]]:
    chunks: list[str] = []
    future = client.call("", request or REQUEST, chunks.append, cancel)
    return future.result(timeout=30), chunks


def test_a_streamed_answer_arrives_in_order_and_whole(standin: ModelStandIn) -> None:
    standin.script = Script(text="We open at nine and close at five.")
    client = ModelClient([provider(standin)])
    try:
        result, chunks = ask(client)
    finally:
        client.close()
    assert result["ok"], result
    assert result["text"] == "We open at nine and close at five."
    assert "".join(chunks) == result["text"] and len(chunks) == result["chunks"] == 8
    assert result["usage"] == {**DEFAULT_USAGE, "estimated": False}
    assert tokens_spent(result) == 30
    assert result["attempts"] == 1 and result["provider"] == "local"
    assert result["first_chunk_ms"] <= result["elapsed_ms"]
    (received,) = standin.received()
    assert received.completed
    assert received.body["model"] == "standin-model"
    assert received.body["stream"] is True
    assert received.body["stream_options"] == {"include_usage": True}
    assert received.body["messages"] == REQUEST["messages"]
    assert received.body["max_tokens"] == 512
    assert received.header(IDEMPOTENCY_HEADER) == "key-1234"
    assert received.header("Authorization") == "Bearer unused"  # a keyless provider


def test_a_provider_that_does_not_stream_answers_in_one_chunk(standin: ModelStandIn) -> None:
    standin.script = Script(text="All at once.")
    client = ModelClient([provider(standin, stream=False)])
    try:
        result, chunks = ask(client, {**REQUEST, "json": True, "max_tokens": 20, "temperature": 0.0})
    finally:
        client.close()
    assert result["ok"] and result["text"] == "All at once." and chunks == ["All at once."]
    (received,) = standin.received()
    assert "stream" not in received.body or received.body["stream"] is False
    assert received.body["response_format"] == {"type": "json_object"}
    assert (received.body["max_tokens"], received.body["temperature"]) == (20, 0.0)


@pytest.mark.parametrize("status", [500, 429])
def test_a_failure_before_the_first_chunk_is_retried_with_the_same_key(
    standin: ModelStandIn, status: int
) -> None:
    standin.script = Script(text="Second time lucky.", fail_status=status, fail_times=1)
    client = ModelClient([provider(standin, retries=2)])
    try:
        result, _ = ask(client)
    finally:
        client.close()
    assert result["ok"] and result["text"] == "Second time lucky." and result["attempts"] == 2
    keys = [r.header(IDEMPOTENCY_HEADER) for r in standin.received()]
    assert keys == ["key-1234", "key-1234"]


def test_a_failure_on_every_attempt_fails_with_its_status(standin: ModelStandIn) -> None:
    standin.script = Script(fail_status=503)
    client = ModelClient([provider(standin, retries=2)])
    try:
        result, chunks = ask(client)
    finally:
        client.close()
    assert not result["ok"] and result["reason"] == "http_503" and result["error"] == "HTTP 503"
    assert result["attempts"] == 3 and len(standin.received()) == 3 and chunks == []
    assert tokens_spent(result) == 0


def test_a_client_error_is_not_retried(standin: ModelStandIn) -> None:
    standin.script = Script(fail_status=400)
    client = ModelClient([provider(standin, retries=2)])
    try:
        result, _ = ask(client)
    finally:
        client.close()
    assert (result["ok"], result["reason"], result["attempts"]) == (False, "http_400", 1)


def test_a_slow_first_chunk_times_out_on_every_attempt(standin: ModelStandIn) -> None:
    standin.script = Script(first_delay_s=3.0)
    client = ModelClient([provider(standin, timeout_s=0.3, retries=1)])
    try:
        result, chunks = ask(client)
    finally:
        client.close()
    assert not result["ok"] and result["reason"] == "timeout" and result["timed_out"]
    assert result["attempts"] == 2 and chunks == []


@pytest.mark.parametrize("status", [429, 503])
def test_a_retry_waits_as_long_as_retry_after_asks(standin: ModelStandIn, status: int) -> None:
    standin.script = Script(text="Worth the wait.", fail_status=status, fail_times=1, retry_after="1")
    client = ModelClient([provider(standin, retries=1)])
    try:
        result, _ = ask(client)
    finally:
        client.close()
    assert result["ok"] and result["text"] == "Worth the wait." and result["attempts"] == 2
    first, second = standin.received()
    assert RETRY_PAUSES_S[0] < 1.0  # so it is the header that made the wait as long as this:
    assert second.at - first.at >= 1.0
    assert second.header(IDEMPOTENCY_HEADER) == first.header(IDEMPOTENCY_HEADER) == "key-1234"


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_a_retry_after_beyond_the_deadline_fails_at_once(standin: ModelStandIn, form: str) -> None:
    later = "120" if form == "seconds" else email.utils.formatdate(time.time() + 120, usegmt=True)
    standin.script = Script(fail_status=429, retry_after=later)
    client = ModelClient([provider(standin, retries=3, max_duration_s=10.0)])
    try:
        result, chunks = ask(client)
    finally:
        client.close()
    assert (result["ok"], result["reason"], result["attempts"]) == (False, "http_429", 1), result
    assert "Retry-After" in result["error"] and "max_duration_s (10s)" in result["error"]
    assert len(standin.received()) == 1 and chunks == []


def test_retry_after_reads_seconds_and_dates() -> None:
    now = 1_700_000_000.0
    assert retry_after_s("2") == 2.0 and retry_after_s(" 1.5 ") == 1.5 and retry_after_s("0") == 0.0
    assert retry_after_s(email.utils.formatdate(now + 30, usegmt=True), now) == 30.0
    assert retry_after_s(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0  # past: no wait
    for unreadable in (None, "", "soon", "-1", "nan", "inf"):
        assert retry_after_s(unreadable) is None, unreadable


def test_a_stream_that_keeps_trickling_ends_at_max_duration(standin: ModelStandIn) -> None:
    standin.script = Script(chunks=[f"{n} " for n in range(200)], chunk_delay_s=0.05)
    client = ModelClient([provider(standin, timeout_s=5.0, max_duration_s=0.5)])
    try:
        result, chunks = ask(client)
    finally:
        client.close()
    assert (result["ok"], result["reason"], result["timed_out"]) == (False, "timeout", True), result
    assert "max_duration_s (0.5s) passed" in result["error"]
    assert 0 < len(chunks) < 200 and result["usage"]["estimated"]  # what was written was spent
    (received,) = standin.received()
    assert received.ended.wait(WAIT_S)
    assert received.left and not received.completed


def test_max_duration_bounds_the_wait_for_the_first_chunk_and_every_retry(standin: ModelStandIn) -> None:
    standin.script = Script(text="Too late.", first_delay_s=3.0)
    client = ModelClient([provider(standin, timeout_s=5.0, retries=3, max_duration_s=0.5)])
    try:
        result, chunks = ask(client)
    finally:
        client.close()
    assert (result["ok"], result["reason"]) == (False, "timeout"), result
    assert result["attempts"] == 1 and len(standin.received()) == 1 and chunks == []


def test_a_stalled_stream_ends_at_the_deadline_not_at_its_next_chunk(standin: ModelStandIn) -> None:
    standin.script = Script(chunks=["first ", "second ", "third"], chunk_delay_s=3.0)
    client = ModelClient([provider(standin, timeout_s=10.0, max_duration_s=0.5)])
    try:
        result, chunks = ask(client)
    finally:
        client.close()
    assert (result["ok"], result["reason"], chunks) == (False, "timeout", ["first "]), result
    (received,) = standin.received()
    assert received.ended.wait(WAIT_S)
    assert received.left and received.chunks_sent == 1  # the connection ended before the second


def test_a_cancel_ends_a_stalled_stream_before_its_next_chunk(standin: ModelStandIn) -> None:
    standin.script = Script(chunks=["first ", "second ", "third"], chunk_delay_s=3.0)
    cancel = threading.Event()
    chunks: list[str] = []

    def on_chunk(text: str) -> None:
        chunks.append(text)
        cancel.set()

    client = ModelClient([provider(standin, timeout_s=10.0)])
    try:
        result = client.call("", REQUEST, on_chunk, cancel).result(timeout=30)
    finally:
        client.close()
    assert (result["ok"], result["reason"], chunks) == (False, "cancelled", ["first "]), result
    (received,) = standin.received()
    assert received.ended.wait(WAIT_S)
    assert received.left and received.chunks_sent == 1


def test_a_callers_shorter_deadline_ends_the_call_as_cancelled(standin: ModelStandIn) -> None:
    standin.script = Script(chunks=[f"{n} " for n in range(200)], chunk_delay_s=0.05)
    client = ModelClient([provider(standin, max_duration_s=60.0)])
    try:
        result = client.call("", REQUEST, within_s=0.5).result(timeout=30)
    finally:
        client.close()
    assert (result["ok"], result["reason"]) == (False, "cancelled"), result
    assert "the caller's deadline passed" in result["error"] and "timed_out" not in result
    (received,) = standin.received()
    assert received.ended.wait(WAIT_S)
    assert received.left and not received.completed


def test_a_stream_cut_after_some_chunks_fails_and_is_not_retried(standin: ModelStandIn) -> None:
    standin.script = Script(text="one two three four five", cut_after=2)
    client = ModelClient([provider(standin, retries=3)])
    try:
        result, chunks = ask(client)
    finally:
        client.close()
    assert not result["ok"] and result["reason"] == "cut", result
    assert chunks == ["one ", "two "] and result["chunks"] == 2
    assert len(standin.received()) == 1  # the user may have seen the first chunks: never again
    assert result["usage"]["estimated"] and tokens_spent(result) > 0  # what was written was spent


def test_a_stream_that_ends_unfinished_was_cut(standin: ModelStandIn) -> None:
    standin.script = Script(text="half an answer", finish=False, usage=None)
    client = ModelClient([provider(standin)])
    try:
        result, _ = ask(client)
    finally:
        client.close()
    assert (result["ok"], result["reason"]) == (False, "cut")


def test_a_chunk_that_is_not_json_is_malformed(standin: ModelStandIn) -> None:
    standin.script = Script(text="one two three", malformed_after=1)
    client = ModelClient([provider(standin, retries=2)])
    try:
        result, chunks = ask(client)
    finally:
        client.close()
    assert (result["ok"], result["reason"]) == (False, "malformed")
    assert chunks == ["one "] and len(standin.received()) == 1


def test_without_usage_the_tokens_are_estimated(standin: ModelStandIn) -> None:
    standin.script = Script(text="x" * 40, usage=None)
    client = ModelClient([provider(standin)])
    try:
        result, _ = ask(client)
    finally:
        client.close()
    prompt = len("Be brief.") + len("Hello?")
    assert result["usage"] == {
        "prompt_tokens": -(-prompt // 4),
        "completion_tokens": 10,
        "total_tokens": -(-prompt // 4) + 10,
        "estimated": True,
    }


def test_a_cancelled_stream_stops_and_its_request_ends(standin: ModelStandIn) -> None:
    standin.script = Script(chunks=[f"{n} " for n in range(50)], chunk_delay_s=0.05)
    cancel = threading.Event()
    chunks: list[str] = []

    def on_chunk(text: str) -> None:
        chunks.append(text)
        if len(chunks) == 3:
            cancel.set()

    client = ModelClient([provider(standin)])
    try:
        result = client.call("", REQUEST, on_chunk, cancel).result(timeout=30)
    finally:
        client.close()
    assert not result["ok"] and result["reason"] == "cancelled"
    assert chunks[:3] == ["0 ", "1 ", "2 "] and len(chunks) < 50
    (received,) = standin.received()
    assert received.ended.wait(WAIT_S)
    assert received.left and not received.completed and received.chunks_sent < 50


def test_no_provider_and_an_unknown_one_fail_at_once() -> None:
    none = ModelClient([])
    some = ModelClient([ModelProvider("local", "http://127.0.0.1:9/v1", "m")])
    try:
        assert not none.configured
        nothing = none.call("", REQUEST).result(timeout=1)
        unknown = some.call("elsewhere", REQUEST).result(timeout=1)
    finally:
        none.close()
        some.close()
    assert (nothing["reason"], nothing["error"]) == ("no_provider", "no model provider is configured")
    assert unknown["reason"] == "no_provider" and "'elsewhere'" in unknown["error"]


def test_an_unreachable_provider_fails_with_a_connection_error() -> None:
    client = ModelClient([ModelProvider("local", "http://127.0.0.1:9/v1", "m", timeout_s=2.0, retries=1)])
    try:
        result = client.call("", REQUEST).result(timeout=30)
    finally:
        client.close()
    assert (result["ok"], result["reason"], result["attempts"]) == (False, "connection", 2)


def test_the_key_comes_from_its_environment_variable_and_goes_nowhere_else(
    standin: ModelStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("STANDIN_MODEL_KEY", secret)
    client = ModelClient([provider(standin, api_key_env="STANDIN_MODEL_KEY")])
    try:
        result, _ = ask(client)
    finally:
        client.close()
    (received,) = standin.received()
    assert received.header("Authorization") == f"Bearer {secret}"
    assert secret not in str(result) and secret not in str(received.body)


def test_a_key_variable_that_is_not_set_fails_naming_the_variable(
    standin: ModelStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STANDIN_MISSING_KEY", raising=False)
    client = ModelClient([provider(standin, api_key_env="STANDIN_MISSING_KEY")])
    try:
        result, _ = ask(client)
    finally:
        client.close()
    assert result["reason"] == "no_key" and "STANDIN_MISSING_KEY" in result["error"]
    assert standin.received() == []


# The configuration -----------------------------------------------------------------------------


def config_with(tmp_path: Path, models_yaml: str) -> ConfabConfig:
    path = tmp_path / "confab.yaml"
    path.write_text("models:\n" + models_yaml)
    return load_config(path)


def test_providers_and_budgets_come_from_the_config(tmp_path: Path) -> None:
    config = config_with(
        tmp_path,
        """\
  providers:
    - {name: local, base_url: "http://127.0.0.1:11434/v1", model: llama3.2}
    - {name: openai, base_url: "https://api.openai.com/v1", model: gpt-4o-mini, api_key_env: OPENAI_API_KEY,
       timeout_s: 10, retries: 2, max_tokens: 200, temperature: 0.1, stream: false, max_duration_s: 45}
  budget: {tokens_per_day: 100000, tenants: {acme: 5000, friends: 0}}
  max_concurrent: 4
""",
    )
    settings = model_settings(config)
    assert settings.providers == (
        ModelProvider("local", "http://127.0.0.1:11434/v1", "llama3.2"),
        ModelProvider(
            "openai",
            "https://api.openai.com/v1",
            "gpt-4o-mini",
            "OPENAI_API_KEY",
            10.0,
            2,
            200,
            0.1,
            False,
            45.0,
        ),
    )
    assert settings.names == ("local", "openai") and settings.max_concurrent == 4
    budget = settings.budget
    assert (budget.limit("acme"), budget.limit("friends"), budget.limit("anyone")) == (5000, 0, 100000)


@pytest.mark.parametrize(
    ("models_yaml", "message"),
    [
        ("  providers: [{name: local, base_url: 'ftp://x', model: m}]\n", "base_url must be an http"),
        ("  providers: [{name: local, base_url: 'http://x/v1'}]\n", "model is required"),
        ("  providers: [{base_url: 'http://x/v1', model: m}]\n", "name is required"),
        (
            "  providers: [{name: a, base_url: 'http://x/v1', model: m},"
            " {name: a, base_url: 'http://y/v1', model: m}]\n",
            "names must be unique",
        ),
        (
            "  providers: [{name: a, base_url: 'http://x/v1', model: m, retries: -1}]\n",
            "retries must be >= 0",
        ),
        ("  providers: [{name: a, base_url: 'http://x/v1', model: m, temperature: 7}]\n", "between 0 and 2"),
        (
            "  providers: [{name: a, base_url: 'http://x/v1', model: m, max_duration_s: 0}]\n",
            "max_duration_s must be > 0",
        ),
        ("  budget: {tokens_per_day: -5}\n", "tokens_per_day must be 0"),
        ("  budget: {tenants: {acme: lots}}\n", "models.budget.tenants.acme must be a number of tokens"),
        ("  max_concurrent: 0\n", "max_concurrent must be >= 1"),
    ],
)
def test_a_bad_model_config_is_refused(tmp_path: Path, models_yaml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_with(tmp_path, models_yaml)


def test_a_key_in_the_config_is_refused_and_never_repeated(tmp_path: Path) -> None:
    secret = "sk-live-abcdef0123456789"
    with pytest.raises(ConfigError) as in_place:
        config_with(
            tmp_path, f"  providers: [{{name: a, base_url: 'http://x/v1', model: m, api_key: {secret}}}]\n"
        )
    assert "never goes in the config" in str(in_place.value) and secret not in str(in_place.value)
    with pytest.raises(ConfigError) as as_name:
        config_with(
            tmp_path,
            f"  providers: [{{name: a, base_url: 'http://x/v1', model: m, api_key_env: {secret}}}]\n",
        )
    assert "NAME of the environment variable" in str(as_name.value) and secret not in str(as_name.value)
