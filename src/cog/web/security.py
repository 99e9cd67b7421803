"""Access control (one token) and the security headers every answer carries.

Both are plain ASGI middleware so streaming answers (files, server-sent events) pass untouched.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from http.cookies import SimpleCookie

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "cog_session"
# Reachable without the token: the login page itself and the static assets it uses.
OPEN_PATHS = frozenset({"/cog/login"})
OPEN_PREFIXES = ("/static/",)


def session_cookie_value(token: str) -> str:
    """The cookie proves knowledge of the token without holding the token itself."""
    return hmac.new(token.encode(), b"cog-session-v1", hashlib.sha256).hexdigest()


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def request_is_authorized(scope: Scope, token: str) -> bool:
    auth = _header(scope, b"authorization")
    if auth.lower().startswith("bearer ") and hmac.compare_digest(
        auth[7:].strip().encode(), token.encode()
    ):
        return True
    cookies = SimpleCookie()
    try:
        cookies.load(_header(scope, b"cookie"))
    except Exception:
        return False
    morsel = cookies.get(COOKIE)
    return morsel is not None and hmac.compare_digest(
        morsel.value.encode(), session_cookie_value(token).encode()
    )


def _is_page(path: str) -> bool:
    """Everything but the JSON API is a page a browser may open (the app's pages, /docs)."""
    return not (path in ("/api", "/openapi.json") or path.startswith("/api/"))


async def send_error(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer `{"detail": ...}` from middleware, before any route runs."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class TokenGuard:
    """With a token configured, every route but the login page needs it."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.token is None
            or scope["type"] not in ("http", "websocket")
            or scope["path"] in OPEN_PATHS
            or scope["path"].startswith(OPEN_PREFIXES)
            or request_is_authorized(scope, self.token)
        ):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4401})
            return
        if _is_page(scope["path"]) and "text/html" in _header(scope, b"accept"):
            from urllib.parse import quote

            target = quote(scope["path"], safe="/")
            headers = [
                (b"location", f"/cog/login?next={target}".encode()),
                (b"content-length", b"0"),
            ]
            await send({"type": "http.response.start", "status": 303, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await send_error(
            send,
            401,
            "This Cog needs a token: send `Authorization: Bearer <COG_API_TOKEN>`.",
            [(b"www-authenticate", b'Bearer realm="cog"')],
        )


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def cross_site(scope: Scope) -> bool:
    """Whether a browser says this request comes from another site's page.

    Browsers name the origin of a request in `Sec-Fetch-Site` (current ones) or `Origin` (on
    every POST in older ones). Scripts and the CLI send neither and are not refused: without a
    cookie to ride on, a cross-site page is the only thing this guards against.
    """
    site = _header(scope, b"sec-fetch-site")
    if site:
        return site not in ("same-origin", "none")
    origin = _header(scope, b"origin")
    if origin:
        from urllib.parse import urlsplit

        return origin == "null" or urlsplit(origin).netloc != _header(scope, b"host")
    return False


class CrossSiteGuard:
    """Another site's page must not change anything in a Cog on this machine (CSRF): with no
    token there is nothing else to stop it, since a form post needs no CORS permission."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS and cross_site(scope):
            await send_error(
                send, 403, "Cross-site requests are refused; use Cog's own pages or the API."
            )
            return
        await self.app(scope, receive, send)


SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    ),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {key.lower() for key, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                # The API docs page loads its script and styles from a CDN-free inline setup;
                # it is the one page that needs a looser policy.
                if scope["path"] in ("/docs", "/redoc"):
                    extra = [(k, v) for k, v in extra if k != b"content-security-policy"]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
