"""SIGTERM drains: health turns NOT_SERVING, what is in flight finishes, open streams end
UNAVAILABLE (telling the client to reconnect elsewhere), and the process exits 0 with
nothing left behind.
"""

from __future__ import annotations

import json
import queue
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2 as std_health_pb2
from grpc_health.v1 import health_pb2_grpc as std_health_pb2_grpc

from confab.protos import mcp_engine_pb2 as pb
from confab.tools.price_service import PriceService
from tests.support import ServerProcess, pizza, price_webhook_config, processes_marked, wait_until_gone

pytestmark = pytest.mark.integration  # every test here starts a server or a process


def requests(
    outbox: queue.Queue[pb.ConversationStreamRequest | None],
) -> Iterator[pb.ConversationStreamRequest]:
    while (item := outbox.get()) is not None:
        yield item


def test_sigterm_finishes_what_is_in_flight_then_ends_streams_unavailable(tmp_path: Path) -> None:
    prices = PriceService(delay_s=1.5).start()  # a turn that is still running when the drain begins
    config = price_webhook_config(
        tmp_path / "confab.yaml",
        prices.url,
        more_yaml="server:\n  shutdown_grace_s: 5.0\nlogging:\n  format: json\n",
    )
    server = ServerProcess(tmp_path / "data", shards=1, extra=["--config", str(config)], log_level="INFO")
    server.start()
    try:
        assert len(processes_marked(server.marker)) >= 4  # edge, admin, logger, supervisor, shard
        channel = server.channel()
        watch = std_health_pb2_grpc.HealthStub(channel).Watch(std_health_pb2.HealthCheckRequest(service=""))
        assert next(watch).status == std_health_pb2.HealthCheckResponse.SERVING

        outbox: queue.Queue[pb.ConversationStreamRequest | None] = queue.Queue()
        stream = server.stub().StreamConversation(requests(outbox))
        outbox.put(
            pb.ConversationStreamRequest(
                init=pb.StreamInit(
                    tenant_context={"tenant_id": "acme"}, conversation_id="drained", event_types=["heartbeat"]
                )
            )
        )
        assert next(stream).HasField("ack")
        outbox.put(pb.ConversationStreamRequest(message=pizza("drained", "hi")))
        assert next(stream).HasField("message_response")
        # This one reaches the price webhook, which takes 1.5 s: in flight when SIGTERM comes.
        outbox.put(pb.ConversationStreamRequest(message=pizza("drained", "2 large pizzas")))
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert next(watch).status == std_health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()

        answers = []
        try:
            for response in stream:
                answers.append(response)
        except grpc.RpcError as error:
            ended = error
        else:
            raise AssertionError("the stream ended with OK; a draining server must say UNAVAILABLE")
        outbox.put(None)
        assert ended.code() == grpc.StatusCode.UNAVAILABLE
        kinds = [a.WhichOneof("response_type") for a in answers]
        # The turn in flight was answered (with the price), then the stream said why it ends.
        assert kinds[0] == "message_response" and answers[0].message_response.current_state == "confirm"
        assert answers[-1].error.error_code == "SERVER_SHUTTING_DOWN"
        assert not answers[-1].error.recoverable
        assert server.process.wait(20) == 0  # type: ignore[union-attr]
        assert wait_until_gone(server.marker, 5.0) == []
    finally:
        server.stop()
        prices.stop()
    # The access log has the stream's real ending.
    lines = [json.loads(line) for line in server.output if line.startswith("{")]
    streams = [e for e in lines if e.get("method", "").endswith("/StreamConversation")]
    assert [e["code"] for e in streams] == ["UNAVAILABLE"]
    assert streams[0]["conversation"] == "drained" and streams[0]["tenant"] == "acme"
