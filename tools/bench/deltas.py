"""Time to first delta, and what relaying deltas costs the edge, against a model that never waits.

    python -m confab.tools.bench.deltas [--chunks 200] [--messages 40] [--rounds 3] [--shards 1]

The model is the local OpenAI-compatible stand-in (``tools.model_standin``), answering every
request with ``--chunks`` chunks and no delay between them. ``confab serve`` (one edge, in the
server's own process) runs a flow whose every turn has a ``generate`` step say what the model
writes.

Each round sends ``--messages`` messages, one after the other, on one StreamConversation,
twice: once with ``response.delta`` events, once without (the init's ``event_types`` leave
them out: the same turns and the same generations, the shard sends no deltas and the edge
relays none), in alternating order. Per message it notes when the first delta came and when
the answer did; per run, the CPU the edge process used. It prints the time to the first delta
and to the answer (median and 90th percentile, client side, one host), the deltas per message,
the edge's CPU per message with and without deltas, and the difference per delta: what reading
a DELTA entry, relaying it and writing its StreamEvent costs the edge. Every answer is checked:
its text must be the deltas put together, and their sequence numbers 0..n-1.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.tools.bench.edges import SERVING, cpu_seconds
from confab.tools.bench.load import request
from confab.tools.model_standin import ModelStandIn, Script

TENANT = "bench"
# Every message has the model write the answer: the first enters the start state, every later
# one comes back into it.
FLOW = """\
flow: writer
description: Every message answered by what the model writes
settings:
  start: writing
states:
  writing:
    on_enter:
      - generate:
          prompt: "Answer: {{ message }}"
          failure_response: "The model did not answer."
    transitions:
      - to: writing
"""
WITHOUT_DELTAS = ["state_changed"]  # any list that leaves response.delta out
ANSWER_TIMEOUT_S = 30.0


@dataclass
class Run:
    deltas_wanted: bool
    first_delta_s: list[float] = field(default_factory=list)
    answer_s: list[float] = field(default_factory=list)
    deltas: int = 0
    edge_cpu_s: float = 0.0
    wrong: list[str] = field(default_factory=list)  # answers that were not their deltas put together

    @property
    def messages(self) -> int:
        return len(self.answer_s)


def stream_run(stub: pb_grpc.MCPEngineStub, messages: int, deltas_wanted: bool) -> Run:
    """``messages`` messages, one after the other, on a new stream of a new conversation."""
    run = Run(deltas_wanted)
    conversation = f"deltas-{uuid.uuid4().hex[:12]}"
    outbox: queue.Queue[pb.ConversationStreamRequest | None] = queue.Queue()
    init = pb.StreamInit(
        tenant_context={"tenant_id": TENANT},
        conversation_id=conversation,
        event_types=[] if deltas_wanted else WITHOUT_DELTAS,
    )
    outbox.put(pb.ConversationStreamRequest(init=init))

    def requests() -> Iterator[pb.ConversationStreamRequest]:
        while (item := outbox.get()) is not None:
            yield item

    responses = stub.StreamConversation(requests(), timeout=ANSWER_TIMEOUT_S * (messages + 1))
    first = next(responses)
    assert first.HasField("ack"), first
    for n in range(messages):
        sent = time.perf_counter()
        outbox.put(pb.ConversationStreamRequest(message=request(TENANT, conversation, f"question {n}")))
        pieces: list[str] = []
        sequences: list[int] = []
        for response in responses:
            if response.HasField("event") and response.event.event_type == "response.delta":
                if not pieces:
                    run.first_delta_s.append(time.perf_counter() - sent)
                fields = response.event.event_data.fields
                pieces.append(fields["text"].string_value)
                sequences.append(int(fields["sequence"].number_value))
            elif response.HasField("message_response"):
                run.answer_s.append(time.perf_counter() - sent)
                text = response.message_response.response.text
                if deltas_wanted and ("".join(pieces) != text or sequences != list(range(len(pieces)))):
                    run.wrong.append(text)
                break
            elif response.HasField("error"):
                raise RuntimeError(f"message {n}: {response.error.error_code}: {response.error.message}")
        run.deltas += len(pieces)
    outbox.put(None)
    for _ in responses:  # the stream ends once the half-close is read
        pass
    return run


def quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"{statistics.median(ordered) * 1000:7.2f} / {p90 * 1000:7.2f} ms"


def start_server(workdir: Path, standin: ModelStandIn, shards: int) -> tuple[subprocess.Popen[str], str]:
    flows = workdir / "flows"
    flows.mkdir()
    (flows / "writer.yaml").write_text(FLOW, encoding="utf-8")
    config = workdir / "confab.yaml"
    config.write_text(
        f"flows:\n  default: writer\n  dirs: [{str(flows)!r}]\n"
        "models:\n  providers:\n"
        f"    - {{name: standin, base_url: {standin.url!r}, model: bench, timeout_s: 10.0, retries: 0}}\n",
        encoding="utf-8",
    )
    command = [
        sys.executable, "-m", "confab.tools.cli", "serve", "--listen", "127.0.0.1:0",
        "--data-dir", str(workdir / "data"), "--shards", str(shards), "--edges", "1",
        "--log-level", "WARNING", "--config", str(config),
    ]  # fmt: skip
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    assert server.stdout is not None
    seen = []
    for line in server.stdout:
        seen.append(line)
        if found := SERVING.search(line):
            threading.Thread(target=server.stdout.read, daemon=True).start()
            return server, found.group(1)
    server.wait(60)
    raise RuntimeError("confab serve did not start:\n" + "".join(seen))


def stop_server(server: subprocess.Popen[str]) -> None:
    server.terminate()
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, 9)
        server.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=200, help="chunks the model writes per answer")
    parser.add_argument("--chunk-text", default="word ", help="the text of every chunk")
    parser.add_argument("--messages", type=int, default=40, help="messages per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs with deltas and without, each")
    parser.add_argument("--shards", type=int, default=1)
    args = parser.parse_args(argv)
    script = Script(chunks=[args.chunk_text] * args.chunks)
    with (
        tempfile.TemporaryDirectory(prefix="confab-bench-deltas-") as workdir,
        ModelStandIn(script) as standin,
    ):
        server, target = start_server(Path(workdir), standin, args.shards)
        try:
            with grpc.insecure_channel(target) as channel:
                stub = pb_grpc.MCPEngineStub(channel)
                stream_run(stub, 5, True)  # warm up: the flow, the shard, the model client's pool
                stream_run(stub, 5, False)
                runs: list[Run] = []
                for round_ in range(args.rounds):
                    for wanted in (True, False) if round_ % 2 == 0 else (False, True):
                        before = cpu_seconds(server.pid)
                        run = stream_run(stub, args.messages, wanted)
                        run.edge_cpu_s = cpu_seconds(server.pid) - before
                        runs.append(run)
        finally:
            stop_server(server)
    report(runs, args)
    return 1 if any(run.wrong for run in runs) else 0


def report(runs: list[Run], args: argparse.Namespace) -> None:
    with_deltas = [r for r in runs if r.deltas_wanted]
    without = [r for r in runs if not r.deltas_wanted]
    print(
        f"deltas: {args.chunks} chunks of {args.chunk_text!r} per answer, no delay; {args.messages} messages"
        f" per run, {args.rounds} runs each way, {args.shards} shard(s), one edge"
    )
    first = [s for r in with_deltas for s in r.first_delta_s]
    print(f"  time to first delta      {quantiles(first)}   (median / p90, client side)")
    print(f"  time to answer, deltas   {quantiles([s for r in with_deltas for s in r.answer_s])}")
    print(f"  time to answer, none     {quantiles([s for r in without for s in r.answer_s])}")
    messages = sum(r.messages for r in with_deltas)
    deltas = sum(r.deltas for r in with_deltas)
    print(f"  deltas per message       {deltas / max(messages, 1):7.1f}")
    per_message_with = [r.edge_cpu_s / r.messages * 1e6 for r in with_deltas if r.messages]
    per_message_without = [r.edge_cpu_s / r.messages * 1e6 for r in without if r.messages]
    print(f"  edge CPU per message     {statistics.median(per_message_with):7.0f} us with deltas"
          f"  ({' '.join(f'{v:.0f}' for v in per_message_with)})")  # fmt: skip
    print(f"                           {statistics.median(per_message_without):7.0f} us without"
          f"  ({' '.join(f'{v:.0f}' for v in per_message_without)})")  # fmt: skip
    per_delta = (statistics.median(per_message_with) - statistics.median(per_message_without)) / max(
        deltas / max(messages, 1), 1
    )
    print(f"  edge CPU per delta       {per_delta:7.1f} us (the difference, over the deltas per message)")
    wrong = sum(len(r.wrong) for r in runs)
    print(f"  answers not their deltas put together: {wrong}")


if __name__ == "__main__":
    raise SystemExit(main())
