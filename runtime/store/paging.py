"""One page of rows in key order, as both stores read them.

Pages follow ``(tenant_id, conversation_id)``: a page starts after the last key of the
one before (keyset paging, so a page costs the same however deep it is) and holds one
tenant's rows only when a tenant is named.
"""

from __future__ import annotations

from collections.abc import Sequence

from confab.runtime.model import ConversationKey


def key_page(
    conditions: Sequence[str],
    args: Sequence[object],
    *,
    tenant_id: str,
    after: ConversationKey | None,
    limit: int,
    mark: str,
) -> tuple[str, list[object]]:
    """``WHERE ... ORDER BY ... LIMIT ...`` of one page, with ``conditions`` (their ``args``
    first) and the page's own; ``mark`` is the driver's placeholder (``?`` or ``%s``)."""
    where, values = list(conditions), list(args)
    if tenant_id:
        where.append(f"tenant_id = {mark}")
        values.append(tenant_id)
    if after is not None:
        where.append(f"(tenant_id, conversation_id) > ({mark}, {mark})")
        values += [after.tenant_id, after.conversation_id]
    clause = f" WHERE {' AND '.join(where) or '1 = 1'} ORDER BY tenant_id, conversation_id LIMIT {mark}"
    return clause, [*values, limit]
