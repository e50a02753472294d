"""Server reflection, in both of its versions: ``grpc.reflection.v1`` and ``v1alpha``.

grpcio-reflection serves only v1alpha, and tools that speak only v1 (newer grpcurl,
Postman, grpcui) then get UNIMPLEMENTED. The two versions are the same protocol under
two package names (v1 is v1alpha renamed, field for field), so the one servicer answers
both: its method is registered under both names, and v1's descriptors are v1alpha's
with the package renamed, so a client may also ask about the reflection service itself.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha
from grpc_reflection.v1alpha import reflection_pb2_grpc as v1alpha_grpc

from confab.protos import admin_pb2, health_pb2, mcp_engine_pb2

V1ALPHA = "grpc.reflection.v1alpha"
V1 = "grpc.reflection.v1"
SERVICE_V1ALPHA = f"{V1ALPHA}.ServerReflection"
SERVICE_V1 = f"{V1}.ServerReflection"


def _add_v1_descriptors() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("grpc/reflection/v1/reflection.proto")
        return  # already there (another library added it, or this ran before)
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha.DESCRIPTOR.CopyToProto(proto)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = V1
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # a message-typed field names its type
                field.type_name = field.type_name.replace(f".{V1ALPHA}.", f".{V1}.")
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(f".{V1ALPHA}.", f".{V1}.")
            method.output_type = method.output_type.replace(f".{V1ALPHA}.", f".{V1}.")
    pool.Add(proto)


def add(server: Any) -> None:
    """Serve reflection (both versions) for every Confab service on ``server`` (a registry)."""
    from grpc_health.v1 import health_pb2 as std_health_pb2

    _add_v1_descriptors()
    names = (
        mcp_engine_pb2.DESCRIPTOR.services_by_name["MCPEngine"].full_name,
        admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        std_health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        SERVICE_V1,
        SERVICE_V1ALPHA,
    )
    servicer = reflection.aio.ReflectionServicer(names)

    class _BothVersions:
        """Registers what the generated adder registers, once per version."""

        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            pass  # the registered methods below carry the same handlers

        def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
            server.add_registered_method_handlers(SERVICE_V1ALPHA, handlers)
            server.add_registered_method_handlers(SERVICE_V1, handlers)

    v1alpha_grpc.add_ServerReflectionServicer_to_server(servicer, _BothVersions())
