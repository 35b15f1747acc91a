"""The operator console: a FastAPI app of its own, mounted at ``/console`` by the API.

Mounted, not included: the API's routes (the submit path above all) are matched
before the mount and run no code of the console's; the console's handlers and
headers apply to ``/console`` alone, and none of its routes enter the API's
OpenAPI document. Every route but the sign-in ones needs a session; every action
(POST) also needs the session's CSRF token. Blocking work (Redis, Celery) runs in
the threadpool, never on the event loop. See docs/console.md.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from dispatcher.config import Settings
from dispatcher.connections import REDIS_ERRORS
from dispatcher.console.actions import (
    ACTIONS,
    apply_action,
    find_dead_letters,
    parse_filter,
    parse_ids,
)
from dispatcher.console.live import WorkerRoster, snapshot
from dispatcher.console.render import STATIC_FILES, Pages, security_headers, static_file
from dispatcher.console.sessions import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    LOGIN_FORM_SECONDS,
    SESSION_COOKIE,
    Session,
    SessionStore,
    console_root,
)
from dispatcher.console.signin import SignIn
from dispatcher.console.views import message_view
from dispatcher.errors import Unavailable
from dispatcher.ids import DEFAULT_NAMESPACE, ID_PATTERN, NAMESPACE_PATTERN, MessageRef
from dispatcher.producer import Dispatcher
from dispatcher.record import DeadLetterPage, StatusRecord

log = logging.getLogger(__name__)

CONSOLE_PATH = "/console"
MAX_FORM_BYTES = 65536
DEAD_LETTERS_PER_PAGE = 100

Handler = Callable[[Request, Session], Awaitable[Response]]
UNAVAILABLE: tuple[type[Exception], ...] = (Unavailable, *REDIS_ERRORS)
"""Redis or the broker is down: the page says so (503) instead of failing."""


class Console:
    """The console's routes; one instance per API app."""

    def __init__(self, settings: Settings, dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.sessions = SessionStore(dispatcher.redis, settings)
        self.signin = SignIn(dispatcher.redis, settings)
        self.pages = Pages(settings.timezone)
        self.roster = WorkerRoster(dispatcher)
        self.namespaces = list(
            dict.fromkeys([dispatcher.namespace, DEFAULT_NAMESPACE, *settings.clients])
        )
        """Where a getMessageId is looked for when the operator names no client."""

    def app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        routes: list[tuple[str, str, Callable[[Request], Awaitable[Response]]]] = [
            ("GET", "/login", self.login_form),
            ("POST", "/login", self.login),
            ("GET", "/login/once", self.login_once),
            ("GET", "/", self.signed_in(self.home)),
            ("POST", "/logout", self.signed_in(self.logout, action=True)),
            ("GET", "/messages", self.signed_in(self.find_message)),
            ("GET", "/messages/{message_id}", self.signed_in(self.message)),
            ("GET", "/dead-letters", self.signed_in(self.dead_letters)),
            ("POST", "/actions/confirm", self.signed_in(self.confirm, action=True)),
            ("POST", "/actions/apply", self.signed_in(self.apply, action=True)),
            ("GET", "/live", self.signed_in(self.live)),
            ("GET", "/live/data", self.signed_in(self.live_data)),
            ("GET", "/static/{name}", self.signed_in(self.static)),
        ]
        for method, path, handler in routes:
            app.add_api_route(path, handler, methods=[method], include_in_schema=False)
        return app

    # -- the gate every page passes ------------------------------------------

    def signed_in(
        self, handler: Handler, *, action: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind a session (and, for an action, the session's CSRF token)."""

        async def guarded(request: Request) -> Response:
            try:
                session = await run_in_threadpool(self.sessions.read, request)
            except REDIS_ERRORS as exc:
                log.warning("console: sessions unreadable: %s", exc)
                return Response(
                    "Redis is unavailable", 503, headers=security_headers(), media_type="text/plain"
                )
            if session is None:
                return self.refuse_anonymous(request)
            if action:
                form = await read_form(request)
                request.state.form = form
                if not self.sessions.csrf_ok(request, session, first(form, CSRF_FIELD)):
                    log.warning(
                        "console: %s sent an action without a valid CSRF token", session.user
                    )
                    return self.pages.page(
                        "error.html", 403, session=session, root=console_root(request),
                        title="Refused", text="This action did not carry a valid CSRF token. "
                        "Reload the page and try again.",
                    )  # fmt: skip
            try:
                return await handler(request, session)
            except UNAVAILABLE as exc:
                return self.pages.page(
                    "error.html", 503, session=session, root=console_root(request),
                    title="Unavailable", text=f"Redis or the broker is unavailable: {exc}",
                )  # fmt: skip

        return guarded

    def refuse_anonymous(self, request: Request) -> Response:
        """Pages send the browser to the sign-in form; data, assets and actions get a 401."""
        root = console_root(request)
        path = request.url.path
        if request.method == "GET" and not path.startswith(
            (f"{root}/static/", f"{root}/live/data")
        ):
            target = f"{root}/login?next={quote(path, safe='/')}"
            return RedirectResponse(target, 303, headers=security_headers())
        return Response("sign in first", 401, headers=security_headers(), media_type="text/plain")

    # -- sign-in ----------------------------------------------------------------

    async def login_form(self, request: Request, *, status: int = 200, error: str = "") -> Response:
        root = console_root(request)
        if not error and await run_in_threadpool(self.sessions.read, request) is not None:
            return RedirectResponse(f"{root}/", 303, headers=security_headers())
        nonce, cookie = await run_in_threadpool(self.sessions.login_nonce)
        next_path = safe_next(root, request.query_params.get("next") or "")
        if request.method == "POST":
            next_path = safe_next(root, first(request.state.form, "next"))
        response = self.pages.page(
            "login.html", status, root=root, login_token=nonce, next=next_path, error=error,
            form_possible=self.signin.possible,
        )  # fmt: skip
        response.set_cookie(
            LOGIN_COOKIE, cookie, max_age=LOGIN_FORM_SECONDS, path=root, httponly=True,
            samesite="strict", secure=request.url.scheme == "https",
        )  # fmt: skip
        return response

    async def login(self, request: Request) -> Response:
        form = request.state.form = await read_form(request)
        root = console_root(request)
        if not self.sessions.login_nonce_ok(request, first(form, "login_token")):
            return await self.login_form(
                request, status=403, error="The sign-in form expired. Please try again."
            )
        remote = request.client.host if request.client else "unknown"
        verdict = await run_in_threadpool(
            self.signin.check, first(form, "client"), first(form, "secret"), remote
        )
        if verdict.throttled:
            return await self.login_form(
                request, status=429, error="Too many failed sign-ins. Wait a few minutes."
            )
        if verdict.user is None:
            return await self.login_form(request, status=401, error="Sign-in failed.")
        return await self.start_session(request, verdict.user, safe_next(root, first(form, "next")))

    async def login_once(self, request: Request) -> Response:
        token = request.query_params.get("token", "")
        user = await run_in_threadpool(self.sessions.redeem_link, token) if token else None
        if user is None:
            request.state.form = {}
            return await self.login_form(
                request, status=403, error="This sign-in link is not valid (each works once)."
            )
        return await self.start_session(request, user, f"{console_root(request)}/live")

    async def start_session(self, request: Request, user: str, target: str) -> Response:
        _, cookie = await run_in_threadpool(self.sessions.open, user)
        response = RedirectResponse(target, 303, headers=security_headers())
        self.sessions.set_cookie(request, response, cookie)
        response.delete_cookie(
            LOGIN_COOKIE, path=console_root(request), httponly=True, samesite="strict"
        )
        return response

    async def logout(self, request: Request, session: Session) -> Response:
        await run_in_threadpool(self.sessions.close, session)
        root = console_root(request)
        response = RedirectResponse(f"{root}/login", 303, headers=security_headers())
        response.delete_cookie(SESSION_COOKIE, path=root, httponly=True, samesite="strict")
        return response

    # -- pages ------------------------------------------------------------------

    def page(self, request: Request, session: Session, template: str, **context: Any) -> Response:
        status = context.pop("status", 200)
        return self.pages.page(
            template, status, session=session, root=console_root(request), **context
        )

    async def home(self, request: Request, session: Session) -> Response:
        return RedirectResponse(
            f"{console_root(request)}/messages", 303, headers=security_headers()
        )

    async def find_message(self, request: Request, session: Session) -> Response:
        message_id = (request.query_params.get("id") or "").strip()
        client = (request.query_params.get("client") or "").strip()
        if message_id:
            target = f"{console_root(request)}/messages/{quote(message_id, safe='')}"
            if client:
                target += f"?client={quote(client, safe='')}"
            return RedirectResponse(target, 303, headers=security_headers())
        return self.page(request, session, "message.html", section="messages", view=None)

    async def message(self, request: Request, session: Session) -> Response:
        message_id = request.path_params["message_id"]
        client = (request.query_params.get("client") or "").strip() or None
        if not ID_PATTERN.fullmatch(message_id):
            return self.page(
                request, session, "message.html", section="messages", view=None, status=404,
                searched=message_id, client=client, problem="is not a valid getMessageId",
            )  # fmt: skip
        if client is not None and not NAMESPACE_PATTERN.fullmatch(client):
            return self.page(
                request, session, "message.html", section="messages", view=None, status=404,
                searched=message_id, client=client, problem="is no client id",
            )  # fmt: skip
        found = await run_in_threadpool(self._read_message, message_id, client)
        if len(found) != 1:
            owners = ", ".join(ref.namespace for ref, _, _ in found)
            problem = (
                f"found for several clients ({owners}): name one" if found else "no such message"
            )
            return self.page(
                request, session, "message.html", section="messages", view=None, status=404,
                searched=message_id, client=client, problem=problem,
            )  # fmt: skip
        [(ref, record, stored)] = found
        view = message_view(record, stored, self.settings.qiniu_domain)
        return self.page(
            request, session, "message.html", section="messages", view=view, searched=message_id,
            client=client, owner=ref.namespace,
        )  # fmt: skip

    def _read_message(
        self, message_id: str, client: str | None
    ) -> list[tuple[MessageRef, StatusRecord, dict[str, Any] | None]]:
        """The message of ``client``'s namespace or, no client named, of whichever namespace
        holds the id among the configured clients' and the producers' (in one round trip)."""
        namespaces = [client] if client else self.namespaces
        refs = [MessageRef(namespace, message_id) for namespace in namespaces]
        records = self.dispatcher.status_many(refs)
        return [
            (ref, record, self.dispatcher.stored_message(ref))
            for ref, record in zip(refs, records, strict=True)
            if record is not None
        ]

    async def dead_letters(self, request: Request, session: Session) -> Response:
        query = request.query_params
        where, problems = parse_filter(query, self.pages.zone)
        offset = int(query["offset"]) if query.get("offset", "").isdigit() else 0
        result: DeadLetterPage | None = None
        if not problems:
            result = await run_in_threadpool(
                lambda: find_dead_letters(
                    self.dispatcher, where, limit=DEAD_LETTERS_PER_PAGE, offset=offset
                )
            )
        root = console_root(request)
        here = f"{root}/dead-letters" + (f"?{request.url.query}" if request.url.query else "")
        # Later pages keep the first page's newest letter as their end: letters dying
        # meanwhile would shift the offsets.
        following = {k: v for k, v in query.items() if k != "offset"}
        following["offset"] = str(result.scanned if result else 0)
        if result and result.first_died is not None and "before" not in query:
            following["before"] = repr(result.first_died)
        return self.page(
            request, session, "dead_letters.html", section="dead", where=where, query=query,
            problems=problems, result=result, offset=offset, zone=self.settings.timezone,
            filtered=any(query.get(name) for name in ("client", "code", "since", "until")),
            back=here, next_page=f"{root}/dead-letters?{urlencode(following)}",
        )  # fmt: skip

    async def confirm(self, request: Request, session: Session) -> Response:
        form = request.state.form
        action = ACTIONS.get(first(form, "action"))
        ids, problem = parse_ids(form.get("id", []))
        if action is None:
            problem = "choose one of: " + ", ".join(ACTIONS)
        return self.page(
            request, session, "confirm.html", section=action.section if action else "dead",
            action=action, ids=ids, problem=problem, status=400 if problem else 200,
            back=safe_next(console_root(request), first(form, "back")),
        )  # fmt: skip

    async def apply(self, request: Request, session: Session) -> Response:
        form = request.state.form
        action = ACTIONS.get(first(form, "action"))
        ids, problem = parse_ids(form.get("id", []))
        back = safe_next(console_root(request), first(form, "back"))
        if action is None or problem or first(form, "confirmed") != "yes":
            return self.page(
                request, session, "confirm.html", section=action.section if action else "dead",
                action=action, ids=ids, back=back, status=400,
                problem=problem or "the action was not confirmed",
            )  # fmt: skip
        outcomes = await run_in_threadpool(apply_action, self.dispatcher, action, ids, session.user)
        return self.page(
            request, session, "outcome.html", section=action.section, action=action,
            outcomes=outcomes, back=back,
        )  # fmt: skip

    async def live(self, request: Request, session: Session) -> Response:
        return self.page(request, session, "live.html", section="live", zone=self.settings.timezone)

    async def live_data(self, request: Request, session: Session) -> Response:
        data = await run_in_threadpool(snapshot, self.dispatcher, self.roster)
        return JSONResponse(data, headers=security_headers())

    async def static(self, request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        content = static_file(name)
        if content is None:
            return Response("not found", 404, media_type="text/plain")
        headers = {**security_headers(), "Cache-Control": "private, max-age=300"}
        return Response(content, media_type=STATIC_FILES[name], headers=headers)


def create_console(settings: Settings, dispatcher: Dispatcher) -> FastAPI:
    return Console(settings, dispatcher).app()


def mount_console(app: FastAPI, settings: Settings, dispatcher: Dispatcher) -> None:
    """Serve the console at ``/console`` unless ``DISPATCHER_CONSOLE_ENABLED`` is false."""
    if settings.console_enabled:
        app.mount(CONSOLE_PATH, create_console(settings, dispatcher))


async def read_form(request: Request) -> dict[str, list[str]]:
    """An urlencoded form body (the console's forms have no files), at most 64 KiB."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
        return {}
    try:
        return parse_qs(
            body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=2000
        )
    except ValueError:  # more fields than any console form has
        return {}


def first(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name)
    return values[0] if values else ""


def safe_next(root: str, target: str) -> str:
    """Only a path inside the console: never another site, never a scheme."""
    if target.startswith(f"{root}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{root}/"
