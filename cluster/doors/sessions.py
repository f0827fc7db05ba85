"""Browser sessions for the web pages (a node's OS Administration, the lab dashboard): login with
the lab's OS administrator, a session cookie, a CSRF token per session, logout.

The same ``Credentials`` and ``Throttle`` as the SSH and REST doors: a wrong password on a login
page counts with the wrong passwords on the other doors of the node and slows the peer down.
The cookie is ``HttpOnly``, ``Secure`` and ``SameSite=Strict``; a session ends after
``IDLE_TIMEOUT_S`` without a request (wall seconds: the pacing of a browser, not simulated time).
Every state-changing form carries the session's CSRF token (``CSRF_FIELD``) and is refused
without it. No page is served without a session except the login page and static files.
"""

from __future__ import annotations

import collections
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from cluster.doors.auth import Credentials, Throttle

COOKIE = "JSESSIONIDSSO"  # the product's single sign-on cookie name
LOGIN_COOKIE = "certsim_login"  # the login form's own token (double submit): no login from another site
CSRF_FIELD = "token"
IDLE_TIMEOUT_S = 30 * 60.0  # the product's default session timeout: 30 minutes
MAX_SESSIONS = 256  # per door; the oldest are forgotten first


@dataclass
class Session:
    """One logged-in browser."""

    user: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    last_seen: float = 0.0
    flash: list[tuple[str, str]] = field(default_factory=list)  # (level, text) shown once on the next page
    scope: frozenset[str] | None = None  # what this login may see where a site serves several labs (None: all)

    def check_csrf(self, token: object) -> bool:
        return isinstance(token, str) and hmac.compare_digest(token.encode(), self.csrf.encode())


class SessionStore:
    """Sessions by their cookie value; ``now`` is injectable so tests can age them."""

    def __init__(self, idle_timeout_s: float = IDLE_TIMEOUT_S, now: Callable[[], float] = time.monotonic) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.now = now
        self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()

    def create(self, user: str) -> tuple[str, Session]:
        key = secrets.token_urlsafe(32)
        session = Session(user, last_seen=self.now())
        self._sessions[key] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return key, session

    def get(self, key: str | None) -> Session | None:
        """The live session of ``key`` (its idle time restarts), or None when unknown or timed out."""
        if not key:
            return None
        session = self._sessions.get(key)
        if session is None:
            return None
        if self.now() - session.last_seen > self.idle_timeout_s:
            del self._sessions[key]
            return None
        session.last_seen = self.now()
        self._sessions.move_to_end(key)
        return session

    def end(self, key: str | None) -> None:
        if key:
            self._sessions.pop(key, None)


SESSION_KEY = web.RequestKey("certsim_session", Session)  # where a request's session is kept


def has_session(request: web.Request) -> bool:
    return SESSION_KEY in request


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PageAuth:
    """Login, logout and the session check of one web site rooted at ``root`` (``/cmplatform``)."""

    def __init__(
        self,
        root: str,
        credentials: Credentials,
        throttle: Throttle,
        log: Any,
        sessions: SessionStore | None = None,
        public: tuple[str, ...] = (),
    ) -> None:
        self.root = root.rstrip("/")
        self.credentials = credentials
        self.throttle = throttle
        self.log = log
        self.sessions = sessions or SessionStore()
        self.login_path = f"{self.root}/login"
        self.logout_path = f"{self.root}/logout"
        self.public = (self.login_path, f"{self.root}/static/", *public)

    def session(self, request: web.Request) -> Session:
        return request[SESSION_KEY]

    def set_cookie(self, response: web.StreamResponse, key: str) -> None:
        response.set_cookie(COOKIE, key, path=self.root, httponly=True, secure=True, samesite="Strict")

    def middleware(self) -> Any:
        """No page without a session (a redirect to the login page); POSTs need the CSRF token."""

        @web.middleware
        async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
            path = request.path
            if not (path == self.root or path.startswith(self.root + "/")):
                return await handler(request)
            if any(path == p or (p.endswith("/") and path.startswith(p)) for p in self.public):
                return await handler(request)
            session = self.sessions.get(request.cookies.get(COOKIE))
            if session is None:
                if request.method == "GET" and not path.endswith("/events"):
                    raise web.HTTPSeeOther(self.login_path)
                raise web.HTTPUnauthorized(text="no session: log in first")
            request[SESSION_KEY] = session
            if request.method not in ("GET", "HEAD"):
                form = await request.post()  # limited by the application's client_max_size
                if not session.check_csrf(form.get(CSRF_FIELD)):
                    self.log.warning("web-csrf-refused", path=path, peer=request.remote)
                    raise web.HTTPForbidden(text="the form's security token is missing or stale; reload the page")
            response = await handler(request)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return check

    async def login_page(self, render: Callable[[str], Awaitable[web.Response]]) -> web.Response:
        """The login page, ``render(token)``: the form's token is also set as a strict cookie, so a login
        posted from another site (which can neither read nor send that cookie) is refused."""
        token = secrets.token_urlsafe(24)
        response = await render(token)
        response.set_cookie(LOGIN_COOKIE, token, path=self.root, httponly=True, secure=True, samesite="Strict")
        return response

    async def login(self, request: web.Request, username: str, password: str, token: str) -> tuple[str | None, str]:
        """Check the credentials under the throttle: the new session's cookie value, or None and why."""
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
            return None, "The login page has expired; reload it and log in again."
        peer = request.remote or "unknown"
        async with self.throttle.attempt(peer) as attempt:
            if self.credentials.check(username, password):
                attempt.succeeded()
                key, _session = self.sessions.create(username)
                self.log.info("web-login", user=username[:64], peer=peer)
                return key, ""
            attempt.failed()
            self.log.warning("web-login-failed", user=username[:64], peer=peer, failures=self.throttle.failures(peer))
        return None, "Invalid user name or password."  # never says which of the two

    async def sign_in(self, request: web.Request, landing: str) -> tuple[web.HTTPSeeOther | None, str]:
        """The login form's post (``j_username``, ``j_password``, ``login_token``) checked by ``login``: a
        redirect to ``landing`` carrying the new session's cookie (the caller raises it), or None and why."""
        form = await request.post()
        key, error = await self.login(
            request, str(form.get("j_username", "")), str(form.get("j_password", "")), str(form.get("login_token", ""))
        )
        if key is None:
            return None, error
        response = web.HTTPSeeOther(landing)
        self.set_cookie(response, key)
        return response, ""

    def logout(self, request: web.Request) -> web.HTTPSeeOther:
        """End the session; the caller raises the answer (a redirect to the login page)."""
        self.sessions.end(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther(self.login_path)
        response.del_cookie(COOKIE, path=self.root)
        return response
