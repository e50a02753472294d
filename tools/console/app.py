"""The console's web application (aiohttp): its pages, its actions and its event stream.

Every page asks the server afresh with the signed-in person's credential; nothing the
server said is kept between requests but the session itself (``sessions``). A refusal is
shown as the status and the server's words; UNIMPLEMENTED as "not available on this
server". Every change is a POST carrying the session's CSRF token, and the actions on a
conversation are confirmed on a page of their own before they are sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import grpc
import jinja2
from aiohttp import web

from confab.protos import admin_pb2 as admin
from confab.tools.console import views
from confab.tools.console.backend import (
    Backend,
    CallFailed,
    Credential,
    NotAvailable,
    timestamp,
)
from confab.tools.console.sessions import COOKIE, Session, Sessions

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
LIST_LIMIT = 2000  # conversations fetched for one listing (sorted here, so stuck ones come first)
ENRICH_LIMIT = 200  # resident conversations inspected when the server's listing lacks their webhook
RATES_WINDOW_S, RATES_STEP = 600.0, ("10s", 10.0)
SSE_PING_S = 15.0
RANGES = {"1h": (3600, 60), "6h": (6 * 3600, 300), "24h": (86400, 3600), "7d": (7 * 86400, 6 * 3600)}
ACTION_TITLES = {
    "reset": "Reset the conversation (start it over on its flow)",
    "force": "Force the conversation into a state",
    "resume": "Resume from handoff (hand it back to its flow)",
    "passivate": "Passivate (store it and stop its actor)",
    "abandon_webhook": "Abandon the webhook its turn waits on (take the failure route)",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

BACKEND = web.AppKey("backend", Backend)
SESSIONS = web.AppKey("sessions", Sessions)
SETTINGS = web.AppKey("settings", dict[str, Any])
TEMPLATES = web.AppKey("templates", jinja2.Environment)
STREAMS = web.AppKey("streams", set[asyncio.Task[Any]])  # the event streams being served
SESSION = web.RequestKey("session", Session)
SESSION_ID = web.RequestKey("session_id", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(
    target: str,
    channel_factory: Callable[[], grpc.aio.Channel],
    *,
    secure_cookie: bool = False,
    sessions: Sessions | None = None,
) -> web.Application:
    """The console for the server at ``target``; ``channel_factory`` opens the channel to it
    (called once the event loop runs)."""
    app = web.Application(middlewares=[security_headers, signed_in])
    app[SESSIONS] = sessions or Sessions()
    app[SETTINGS] = {"target": target, "secure_cookie": secure_cookie}
    app[TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
    )
    app[TEMPLATES].filters["ago"] = views.ago
    app[TEMPLATES].filters["stamp"] = views.stamp_text
    app[TEMPLATES].filters["query"] = lambda params: urlencode({k: v for k, v in params.items() if v})

    async def open_channel(app: web.Application) -> None:
        app[BACKEND] = Backend(channel_factory())

    async def close_channel(app: web.Application) -> None:
        await app[BACKEND].channel.close()

    async def end_streams(app: web.Application) -> None:
        # An open event stream never ends by itself: without this, stopping the console would
        # wait for every browser tab that follows the tail to go away.
        streams: set[asyncio.Task[Any]] = app[STREAMS]
        for task in list(streams):
            task.cancel()

    app[STREAMS] = set()
    app.on_startup.append(open_channel)
    app.on_shutdown.append(end_streams)
    app.on_cleanup.append(close_channel)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", home)
    app.router.add_get("/cluster", cluster_page)
    app.router.add_get("/api/rates", rates)
    app.router.add_get("/conversations", conversations_page)
    app.router.add_get("/conversation", conversation_page)
    app.router.add_post("/conversation/action", conversation_action)
    app.router.add_post("/conversation/agent-message", agent_message)
    app.router.add_get("/events", events_page)
    app.router.add_get("/events/stream", events_stream)
    app.router.add_get("/analytics", analytics_page)
    app.router.add_static("/static/", HERE / "static", append_version=False)
    return app


# Middleware ----------------------------------------------------------------------------

OPEN_PATHS = ("/login", "/static/")


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    # same-origin: a form POST then carries its Origin, which the CSRF check compares (no-referrer
    # would make it "null"); no other site is ever told a console URL.
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@web.middleware
async def signed_in(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Pages need a session; POSTs need one from this origin, with the session's CSRF token."""
    if request.method == "POST" and not same_origin(request):
        raise web.HTTPForbidden(text="cross-origin request refused")
    if request.path.startswith(OPEN_PATHS):
        return await handler(request)
    session_id = request.cookies.get(COOKIE)
    session = request.app[SESSIONS].get(session_id)
    if session is None:
        if request.path.startswith(("/api/", "/events/stream")):
            raise web.HTTPUnauthorized(text="signed out: sign in again")
        raise web.HTTPSeeOther("/login")
    if request.method == "POST":
        form = await request.post()
        if not session.csrf_ok(str(form.get("csrf", ""))):
            raise web.HTTPForbidden(text="the form's CSRF token does not match this session: reload the page")
    request[SESSION] = session
    request[SESSION_ID] = session_id or ""
    return await handler(request)


def same_origin(request: web.Request) -> bool:
    """A POST from a page of this console: its Origin (or, lacking one, Referer) is our host."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin or origin == "null":
        return origin is None  # no header at all: not a browser's cross-site form
    return urlsplit(origin).netloc == request.host


# Rendering -----------------------------------------------------------------------------


def render(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    session = request.get(SESSION)
    page = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            session=session,
            flash=session.take_flash() if session is not None else [],
            target=request.app[SETTINGS]["target"],
            path=request.path,
            **values,
        )
    )
    return web.Response(text=page, content_type="text/html", status=status)


def problem(error: CallFailed, what: str) -> dict[str, str]:
    """A refusal as the page shows it: what was asked, the status, the server's words."""
    if isinstance(error, NotAvailable):
        return {"what": what, "code": error.code, "text": f"{what} is not available on this server"}
    return {"what": what, "code": error.code, "text": error.details or error.code}


def session_of(request: web.Request) -> Session:
    return request[SESSION]


def backend_of(request: web.Request) -> Backend:
    return request.app[BACKEND]


# Signing in and out ------------------------------------------------------------------------


async def login_page(request: web.Request) -> web.StreamResponse:
    return render(request, "login.html", error=None, kind="api_key")


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    kind = "token" if form.get("kind") == "token" else "api_key"
    credential = Credential(kind, str(form.get("secret", "")).strip())
    try:
        role, tenant = await backend_of(request).probe(credential)
    except CallFailed as exc:
        error = problem(exc, "Signing in")
        if exc.code == "PERMISSION_DENIED":
            error["text"] = "this credential has neither the admin nor the operator role: " + error["text"]
        return render(request, "login.html", status=401, error=error, kind=kind)
    sessions = request.app[SESSIONS]
    sessions.close(request.cookies.get(COOKIE))
    session_id, _ = sessions.open(credential, role, tenant)
    response = web.HTTPSeeOther("/")
    response.set_cookie(
        COOKIE,
        session_id,
        httponly=True,
        samesite="Strict",
        secure=request.app[SETTINGS]["secure_cookie"] or None,
        path="/",
    )
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    request.app[SESSIONS].close(request[SESSION_ID])
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/cluster" if session_of(request).role == "operator" else "/conversations")


# The cluster --------------------------------------------------------------------------------


async def cluster_page(request: web.Request) -> web.StreamResponse:
    session, backend = session_of(request), backend_of(request)
    cluster, error, serving = None, None, ""
    try:
        cluster = await backend.cluster(session.credential)
    except CallFailed as exc:
        error = problem(exc, "The cluster view")
        if exc.code == "PERMISSION_DENIED":
            error["text"] = "the cluster view needs the operator role (" + error["text"] + ")"
    try:
        serving = await backend.serving()
    except CallFailed as exc:
        serving = exc.code
    vshards: dict[str, list[int]] = {}
    if cluster is not None:
        for owner in cluster.vshards:
            vshards.setdefault(owner.shard_id or "(moving)", []).append(owner.vshard)
    return render(
        request,
        "cluster.html",
        cluster=cluster,
        error=error,
        serving=serving,
        vshards=sorted(vshards.items()),
        started=views.seconds_of(cluster.started_at) if cluster is not None else 0.0,
    )


async def rates(request: web.Request) -> web.StreamResponse:
    """The live rates the cluster page charts (JSON, polled by its script)."""
    granularity, step = RATES_STEP
    end = time.time()
    start = end - RATES_WINDOW_S
    try:
        answer = await backend_of(request).metrics(
            session_of(request).credential, start, end + 1, granularity
        )
    except CallFailed as exc:
        return web.json_response({"error": problem(exc, "GetMetrics")}, status=502)
    return web.json_response(views.rates(answer, step, start, end))


# Conversations ---------------------------------------------------------------------------------


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "") in ("1", "on", "true")


async def conversations_page(request: web.Request) -> web.StreamResponse:
    session, backend = session_of(request), backend_of(request)
    q = request.query
    filters = {
        "tenant": q.get("tenant", "").strip(),
        "state": q.get("state", "").strip(),
        "flow": q.get("flow", "").strip(),
        "idle": q.get("idle", "").strip(),
        "handoff": "1" if _flag(request, "handoff") else "",
        "resident": "1" if _flag(request, "resident") else "",
        "webhook": "1" if _flag(request, "webhook") else "",
        "sort": q.get("sort", "stuck") if q.get("sort", "stuck") in views.SORTS else "stuck",
    }
    try:
        idle = float(filters["idle"] or 0)
        page_number = int(q.get("page", "1") or 1)
    except ValueError:
        idle, page_number = -1.0, 1
    notes: list[str] = []
    rows: list[views.Row] = []
    more, error = False, None
    if idle < 0:
        error = {
            "what": "The listing",
            "code": "INVALID_ARGUMENT",
            "text": "idle must be a number of seconds",
        }
    else:
        request_ = admin.ListConversationsRequest(
            tenant_id=filters["tenant"],
            state=filters["state"],
            flow_id=filters["flow"],
            idle_longer_than_s=idle,
            in_handoff=bool(filters["handoff"]),
            resident_only=bool(filters["resident"]),
            waiting_on_webhook=bool(filters["webhook"]),
        )
        try:
            served = await backend.webhook_fields_served(session.credential)
            summaries, more = await backend.list_all(session.credential, request_, LIST_LIMIT)
            if served:
                rows = [views.row(s) for s in summaries]
            else:
                rows = await _enriched_rows(backend, session, summaries, notes)
                if filters["webhook"]:
                    rows = [r for r in rows if r.webhook]
        except CallFailed as exc:
            error = problem(exc, "The listing")
    if session.role == "admin" and not session.tenant and rows:
        session.tenant = rows[0].tenant
    if more:
        notes.append(f"Only the first {LIST_LIMIT} conversations are shown: narrow the filters.")
    page = views.page_of(views.sort_rows(rows, filters["sort"]), page_number, PAGE_SIZE)
    return render(
        request,
        "conversations.html",
        filters=filters,
        page=page,
        sorts=views.SORTS,
        notes=notes,
        error=error,
        stuck=sum(1 for r in rows if r.stuck),
    )


async def _enriched_rows(
    backend: Backend, session: Session, summaries: list[admin.ConversationSummary], notes: list[str]
) -> list[views.Row]:
    """Rows for a server whose listing lacks the webhook and mailbox fields: the resident
    conversations' shards are asked (InspectConversation), at most ENRICH_LIMIT of them."""
    resident = [s for s in summaries if s.resident][:ENRICH_LIMIT]
    asked = {
        (e.summary.tenant_id, e.summary.conversation_id): e
        for e in await backend.enrich(session.credential, resident)
    }
    notes.append(
        "This server's listing does not say which conversations wait on a webhook "
        "(the waiting-on-webhook filter is not available on this server): "
        f"the {len(resident)} resident conversations were inspected one by one instead."
    )
    rows = []
    for s in summaries:
        found = asked.get((s.tenant_id, s.conversation_id))
        rows.append(views.row(s, found.webhook, 0.0, found.mailbox) if found else views.row(s))
    return rows


async def conversation_page(request: web.Request) -> web.StreamResponse:
    session, backend = session_of(request), backend_of(request)
    tenant, conversation = request.query.get("tenant", ""), request.query.get("id", "")
    detail, error = None, None
    try:
        detail = await backend.inspect(session.credential, tenant, conversation, 20)
    except CallFailed as exc:
        error = problem(exc, "Inspecting the conversation")
    state = views.to_dict(detail.state) if detail is not None else {}
    turns = views.transcript(detail) if detail is not None else []
    return render(
        request,
        "conversation.html",
        tenant=tenant,
        conversation=conversation,
        detail=detail,
        error=error,
        state=state,
        state_json=json.dumps(state, indent=2, sort_keys=True, ensure_ascii=False),
        slots=views.slots_of(state),
        turns=turns,
        states=views.known_states(state, turns),
        handed_off=views.in_handoff(state),
        request_id=uuid.uuid4().hex,
        titles=ACTION_TITLES,
    )


async def conversation_action(request: web.Request) -> web.StreamResponse:
    """First the confirmation page; once confirmed, the action, and back to the conversation."""
    session, form = session_of(request), await request.post()
    tenant, conversation = str(form.get("tenant", "")), str(form.get("id", ""))
    action, reason = str(form.get("action", "")), str(form.get("reason", "")).strip()
    state = str(form.get("state", "")).strip()
    if action not in ACTION_TITLES:
        raise web.HTTPBadRequest(text=f"unknown action {action!r}")
    back = "/conversation?" + urlencode({"tenant": tenant, "id": conversation})
    if action == "force" and not state:
        session.say("error", "INVALID_ARGUMENT: force needs a state")
        raise web.HTTPSeeOther(back)
    if form.get("confirmed") != "yes":
        return render(
            request,
            "confirm.html",
            tenant=tenant,
            conversation=conversation,
            action=action,
            title=ACTION_TITLES[action],
            reason=reason,
            state=state,
            back=back,
        )
    why = reason or f"confab console {action} by {session.who}"
    try:
        result = await backend_of(request).act(
            session.credential, action, tenant, conversation, reason=why, state=state
        )
    except CallFailed as exc:
        said = problem(exc, action.replace("_", " ").capitalize())
        session.say("error", f"{said['code']}: {said['text']}")
    else:
        details = views.to_dict(result.details)
        text = result.message or ("done" if result.ok else "not done")
        extra = ", ".join(f"{k} {v}" for k, v in sorted(details.items()))
        session.say("ok" if result.ok else "error", f"{action}: {text}" + (f" ({extra})" if extra else ""))
    raise web.HTTPSeeOther(back)


async def agent_message(request: web.Request) -> web.StreamResponse:
    session, form = session_of(request), await request.post()
    tenant, conversation = str(form.get("tenant", "")), str(form.get("id", ""))
    text = str(form.get("text", "")).strip()
    back = "/conversation?" + urlencode({"tenant": tenant, "id": conversation})
    if not text:
        session.say("error", "INVALID_ARGUMENT: the message is empty")
        raise web.HTTPSeeOther(back)
    try:
        result = await backend_of(request).act(
            session.credential,
            "agent_message",
            tenant,
            conversation,
            text=text,
            agent=str(form.get("agent", "")).strip(),
            request_id=str(form.get("request_id", "")),
        )
    except CallFailed as exc:
        said = problem(exc, "Answering as a person (SendAgentMessage)")
        session.say("error", f"{said['code']}: {said['text']}")
    else:
        session.say("ok" if result.ok else "error", f"message: {result.message or 'sent'}")
    raise web.HTTPSeeOther(back)


# Events ----------------------------------------------------------------------------------------

EVENT_TYPES = ("turn", "transition", "handoff", "error", "activation", "passivation")


async def events_page(request: web.Request) -> web.StreamResponse:
    q = request.query
    chosen = [t for t in q.getall("type", []) if t in EVENT_TYPES]
    filters = {"tenant": q.get("tenant", ""), "id": q.get("id", "")}
    stream_query = urlencode([*filters.items(), *(("type", t) for t in chosen)])
    return render(
        request, "events.html", filters=filters, types=EVENT_TYPES, chosen=chosen, stream_query=stream_query
    )


async def events_stream(request: web.Request) -> web.StreamResponse:
    """TailEvents as server-sent events: ``data:`` one event as JSON; ``event: failed`` with
    the status when the server refuses or ends the tail."""
    session, q = session_of(request), request.query
    tail = admin.TailEventsRequest(
        tenant_id=q.get("tenant", ""),
        conversation_id=q.get("id", ""),
        event_types=[t for t in q.getall("type", []) if t in EVENT_TYPES],
    )
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    await response.write(b"retry: 5000\n: tail open\n\n")
    queue: asyncio.Queue[dict[str, Any] | CallFailed | None] = asyncio.Queue(maxsize=1000)

    async def follow() -> None:
        try:
            async for event in backend_of(request).tail(session.credential, tail):
                if queue.full():
                    queue.get_nowait()  # a slow page loses the oldest events, as the server's tail does
                queue.put_nowait(views.event_json(event))
            queue.put_nowait(None)
        except CallFailed as exc:
            queue.put_nowait(exc)

    task = asyncio.create_task(follow())
    this = asyncio.current_task()
    assert this is not None
    request.app[STREAMS].add(this)
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), SSE_PING_S)
            except TimeoutError:
                await response.write(b": ping\n\n")
                continue
            if isinstance(item, CallFailed):
                said = problem(item, "The event tail")
                await response.write(f"event: failed\ndata: {json.dumps(said)}\n\n".encode())
                break
            if item is None:
                ended = {"what": "The event tail", "code": "OK", "text": "the server ended the tail"}
                await response.write(f"event: failed\ndata: {json.dumps(ended)}\n\n".encode())
                break
            await response.write(f"data: {json.dumps(item, ensure_ascii=False)}\n\n".encode())
    except ConnectionResetError:
        pass  # the page went away
    finally:
        request.app[STREAMS].discard(this)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    return response


# Analytics ---------------------------------------------------------------------------------------


async def analytics_page(request: web.Request) -> web.StreamResponse:
    session, q = session_of(request), request.query
    tenant = q.get("tenant", "").strip() or (session.tenant if session.role == "admin" else "")
    flow = q.get("flow", "").strip()
    span = q.get("range", "24h") if q.get("range") in RANGES else "24h"
    report, error = None, None
    flows: list[dict[str, Any]] = []
    if tenant:
        seconds, bucket = RANGES[span]
        now = time.time()
        ask = admin.GetAnalyticsRequest(
            tenant_id=tenant,
            flow_id=flow,
            since=timestamp(now - seconds),
            until=timestamp(now),
            bucket_s=bucket,
        )
        try:
            report = await backend_of(request).analytics(session.credential, ask)
        except CallFailed as exc:
            error = problem(exc, "Analytics (GetAnalytics)")
    if report is not None:
        for index, f in enumerate(report.flows):
            flows.append(
                {
                    "index": index,
                    "flow": f,
                    "totals": views.to_dict(f.totals),
                    "series": json.dumps(views.series_columns(f)),
                    "ends": views.end_states(f),
                    "graph": views.flow_graph(f),
                }
            )
    return render(
        request,
        "analytics.html",
        tenant=tenant,
        flow=flow,
        span=span,
        ranges=list(RANGES),
        report=report,
        flows=flows,
        error=error,
        counts=views.SERIES,
    )
