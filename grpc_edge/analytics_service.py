"""``Admin/GetAnalytics``: a tenant's conversation analytics over a time range (docs/analytics.md).

The edge reads no store: the request goes to a shard of this host as a query
(``runtime.engine.Engine.analytics``), which reads the counters every shard of every host
wrote with its turns and answers the report in ``AnalyticsReport``'s JSON mapping. Scoped as
the rest of the Admin API: a tenant's ``admin`` gets its own tenant only (another is
PERMISSION_DENIED), an ``operator`` any tenant, and the shard checks the scope again.
"""

from __future__ import annotations

import math
import time

from google.protobuf import json_format, timestamp_pb2

from confab.grpc_edge import auth, convert
from confab.grpc_edge.call import note_target
from confab.protos import admin_pb2 as pb
from confab.runtime.analytics import BUCKET_S, AnalyticsQuery, check_query
from confab.runtime.config import LimitsConfig
from confab.runtime.engine import Engine
from confab.runtime.errors import InvalidArgument

DEFAULT_RANGE_S = 86400
DEFAULT_BUCKET_S = 3600


def analytics_query(request: pb.GetAnalyticsRequest, limits: LimitsConfig, now: float) -> AnalyticsQuery:
    """The request as a query of whole minutes (``since`` rounded down, ``until`` up), once the
    caller may see its tenant; INVALID_ARGUMENT naming the field for a bad range or width."""
    tenant_id = convert.identifier(request.tenant_id, "tenant_id", limits)
    note_target(tenant_id, "")
    auth.authorize_admin_of(tenant_id)
    flow_id = convert.identifier(request.flow_id, "flow_id", limits, required=False)
    until = _seconds(request.until) if request.HasField("until") else now
    since = _seconds(request.since) if request.HasField("since") else until - DEFAULT_RANGE_S
    query = AnalyticsQuery(
        tenant_id,
        flow_id,
        float(math.floor(since / BUCKET_S) * BUCKET_S),
        float(math.ceil(until / BUCKET_S) * BUCKET_S),
        request.bucket_s or DEFAULT_BUCKET_S,
        request.by_version,
    )
    problem = check_query(query) if since < until else "since: must be before until"
    if problem:
        field, _, message = problem.partition(": ")
        raise InvalidArgument(f"{field} {message}", field=field)
    return query


async def get_analytics(
    engine: Engine, request: pb.GetAnalyticsRequest, limits: LimitsConfig
) -> pb.AnalyticsReport:
    query = analytics_query(request, limits, time.time())
    report = await engine.analytics(query, scope=auth.admin_scope())
    return json_format.ParseDict(report, pb.AnalyticsReport())


def _seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9
