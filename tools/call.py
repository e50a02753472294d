"""``confab call``: any RPC of the services Confab serves, JSON in and JSON out, like grpcurl.

    confab call [--target HOST:PORT] [--api-key KEY | --token JWT] [-H 'KEY: VALUE' ...]
                [--tls-ca FILE] [--timeout S] METHOD [JSON | -]
    confab call --list

METHOD is ``package.Service/Method`` (``mcp.engine.v2.MCPEngine/ProcessMessage``), with a
``.`` instead of the ``/`` if you like, or just ``Service/Method`` where that names one
method. JSON is the request in protobuf's JSON mapping (field names as in the .proto
files or in lowerCamelCase, enums by name); ``-`` reads it from standard input, and none
at all sends an empty request. A method that takes a stream of requests
(StreamConversation) reads a JSON array of them, or the objects one after another.
Every response is printed as one JSON document (field names as in the .proto files,
fields at their defaults included).

The request and response types come from the .proto files compiled into Confab, so no
server reflection is needed. A failed call prints ``error: CODE: message`` and the
status's details (``google.rpc.ErrorInfo`` with Confab's reason, ``BadRequest`` naming the
field) on standard error. Exit status: 0 OK, 1 the server answered with an error,
2 a usage error (unknown method, JSON that does not fit the request), 3 the server could
not be reached.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2  # noqa: F401  (registers the detail types for printing)
from grpc_health.v1 import health_pb2 as std_health_pb2
from grpc_status import rpc_status

from confab.protos import admin_pb2, health_pb2, mcp_engine_pb2
from confab.tools.connection import ConnectionOptionError, Metadata, add_connection_arguments, connection_from

OK, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3
UNARY_TIMEOUT_S = 30.0  # a unary call's default deadline; streams have none unless --timeout says
# What Confab serves, as compiled into it (reflection is served too, but needs no calling by hand).
SERVED_FILES: tuple[FileDescriptor, ...] = (
    mcp_engine_pb2.DESCRIPTOR,
    health_pb2.DESCRIPTOR,
    admin_pb2.DESCRIPTOR,
    std_health_pb2.DESCRIPTOR,
)


class CallUsageError(Exception):
    """The call cannot be made as asked (exit status 2)."""


@dataclass(frozen=True, slots=True)
class Method:
    descriptor: MethodDescriptor

    @property
    def path(self) -> str:
        """The HTTP/2 path gRPC calls: ``/package.Service/Method``."""
        return f"/{self.descriptor.containing_service.full_name}/{self.descriptor.name}"

    @property
    def name(self) -> str:
        return self.path[1:]

    @property
    def client_streaming(self) -> bool:
        return bool(self.descriptor.client_streaming)

    @property
    def server_streaming(self) -> bool:
        return bool(self.descriptor.server_streaming)

    def request(self) -> Message:
        return message_factory.GetMessageClass(self.descriptor.input_type)()

    def response_type(self) -> type[Message]:
        return message_factory.GetMessageClass(self.descriptor.output_type)

    def kind(self) -> str:
        ends = ("stream " if self.client_streaming else "") + self.descriptor.input_type.name
        answers = ("stream " if self.server_streaming else "") + self.descriptor.output_type.name
        return f"({ends}) returns ({answers})"


def served_methods() -> list[Method]:
    return [
        Method(method)
        for file in SERVED_FILES
        for service in file.services_by_name.values()
        for method in service.methods
    ]


def find_method(name: str, methods: Sequence[Method] | None = None) -> Method:
    """The method ``name`` names: ``pkg.Service/Method``, ``pkg.Service.Method`` or ``Service/Method``."""
    methods = served_methods() if methods is None else methods
    wanted = name.strip().lstrip("/")
    if "/" not in wanted and "." in wanted:
        service, _, method = wanted.rpartition(".")
        wanted = f"{service}/{method}"
    exact = [m for m in methods if m.name == wanted]
    if exact:
        return exact[0]
    # A service named without its package, where only one package has it.
    short = [m for m in methods if m.name.rsplit(".", 1)[-1] == wanted or m.name.endswith("." + wanted)]
    if len(short) == 1:
        return short[0]
    if len(short) > 1:
        raise CallUsageError(f"{name!r} is ambiguous: {', '.join(m.name for m in short)}")
    close = difflib.get_close_matches(wanted, [m.name for m in methods], n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; `confab call --list` lists them"
    raise CallUsageError(f"no method {name!r}{hint}")


def parse_header(text: str) -> tuple[str, str]:
    """``KEY: VALUE`` (or ``KEY:VALUE``) as gRPC metadata; keys are lower case on the wire."""
    key, colon, value = text.partition(":")
    key = key.strip().lower()
    if not colon or not key:
        raise CallUsageError(f"-H {text!r}: expected KEY: VALUE")
    return key, value.strip()


def json_documents(text: str) -> Iterator[Any]:
    """The JSON values in ``text``, one after another (whitespace between them)."""
    decoder = json.JSONDecoder()
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return
        try:
            document, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise CallUsageError(f"the request is not JSON: {exc}") from exc
        yield document


def requests_from(text: str, method: Method) -> list[Message]:
    """The request messages ``text`` holds: one for a unary request, any number for a stream."""
    documents = list(json_documents(text))
    if method.client_streaming:
        if len(documents) == 1 and isinstance(documents[0], list):
            documents = documents[0]
    elif not documents:
        documents = [{}]
    elif len(documents) > 1 or not isinstance(documents[0], dict):
        raise CallUsageError(f"{method.name} takes one request: one JSON object")
    requests = []
    for index, document in enumerate(documents):
        request = method.request()
        where = f"request {index + 1}" if method.client_streaming else "the request"
        try:
            json_format.ParseDict(document, request)
        except json_format.ParseError as exc:
            raise CallUsageError(f"{where} does not fit {request.DESCRIPTOR.full_name}: {exc}") from exc
        requests.append(request)
    return requests


def response_json(message: Message) -> str:
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(data, indent=2, ensure_ascii=False)


def error_report(error: grpc.RpcError) -> list[str]:
    """How a failed call ended: its code and message, then the rich status details as JSON."""
    code: grpc.StatusCode = error.code()
    lines = [f"error: {code.name}: {error.details() or ''}".rstrip()]
    status = rpc_status.from_call(error)
    if status is not None and status.details:
        details = [
            json_format.MessageToDict(detail, preserving_proto_field_name=True) for detail in status.details
        ]
        lines.append(json.dumps(details, indent=2, ensure_ascii=False))
    return lines


def call(
    channel: grpc.Channel,
    method: Method,
    requests: Sequence[Message],
    metadata: Metadata,
    timeout_s: float | None,
) -> Iterable[Message]:
    """Make the call; its responses as they come."""
    serialize, deserialize = _serialize, method.response_type().FromString
    if method.client_streaming and method.server_streaming:
        stub: Any = channel.stream_stream(method.path, serialize, deserialize)
        responses: Iterable[Message] = stub(iter(requests), metadata=metadata, timeout=timeout_s)
        return responses
    if method.client_streaming:
        stub = channel.stream_unary(method.path, serialize, deserialize)
        return [stub(iter(requests), metadata=metadata, timeout=timeout_s)]
    (request,) = requests
    if method.server_streaming:
        stub = channel.unary_stream(method.path, serialize, deserialize)
        streamed: Iterable[Message] = stub(request, metadata=metadata, timeout=timeout_s)
        return streamed
    stub = channel.unary_unary(method.path, serialize, deserialize)
    return [stub(request, metadata=metadata, timeout=timeout_s)]


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``call`` subcommand, added to ``confab``'s subcommands."""
    parser = commands.add_parser("call", help="call any RPC with a JSON request; print the JSON answer")
    add_connection_arguments(parser)
    parser.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        default=[],
        metavar="'KEY: VALUE'",
        help="send this metadata (repeatable), e.g. -H 'x-api-key: KEY'",
    )
    parser.add_argument(
        "--timeout", type=float, metavar="S", help=f"deadline (default {UNARY_TIMEOUT_S:g} s; streams: none)"
    )
    parser.add_argument("--list", action="store_true", help="list the methods that can be called")
    parser.add_argument("method", nargs="?", metavar="METHOD", help="package.Service/Method")
    parser.add_argument("json", nargs="?", metavar="JSON", help="the request; - reads standard input")


def run(args: argparse.Namespace, out: TextIO | None = None, stdin: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.list:
        for method in served_methods():
            out.write(f"{method.name} {method.kind()}\n")
        return OK
    try:
        if not args.method:
            raise CallUsageError("name a METHOD (confab call --list lists them)")
        if args.timeout is not None and args.timeout <= 0:
            raise CallUsageError("--timeout must be positive")
        method = find_method(args.method)
        headers = tuple(parse_header(h) for h in args.headers)
        connection = connection_from(args, headers)
        text = (stdin or sys.stdin).read() if args.json == "-" else (args.json or "")
        requests = requests_from(text, method)
    except (CallUsageError, ConnectionOptionError) as exc:
        print(f"confab call: {exc}", file=sys.stderr)
        return USAGE
    streams = method.client_streaming or method.server_streaming
    timeout = args.timeout if args.timeout is not None else (None if streams else UNARY_TIMEOUT_S)
    with connection.channel() as channel:
        try:
            for response in call(channel, method, requests, connection.metadata, timeout):
                out.write(response_json(response) + "\n")
                out.flush()
        except grpc.RpcError as exc:
            for line in error_report(exc):
                print(line, file=sys.stderr)
            return UNREACHABLE if exc.code() == grpc.StatusCode.UNAVAILABLE else FAILED
        except KeyboardInterrupt:  # a stream (a Watch, a tail) followed until Ctrl-C
            return OK
        except BrokenPipeError:  # the reader went away (`| head`): what it wanted, it has
            if out is sys.stdout:
                # Python flushes stdout once more at exit, and would complain of the same pipe.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return OK
    return OK
