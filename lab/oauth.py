"""A lab OAuth2 authorization server on 127.0.0.1 over HTTPS (the lab CA's relay certificate).

Real HTTP, real TLS, real grants, so the token library is exercised as against a provider:

* ``POST /token``: ``client_credentials`` (client id + secret), ``refresh_token`` (optionally
  rotating the refresh token on every use), the RFC 8628 device-code grant, and the RFC 7523 JWT
  bearer grant of service accounts (RS256 assertion checked against the registered public key,
  ``sub`` = the mailbox, refused without domain-wide delegation);
* ``POST /devicecode``: starts a device login that the test approves with :meth:`approve`;
* ``POST /introspect`` (RFC 7662): what Dovecot's oauth2 passdb asks; a token is active only while
  unexpired, unrevoked, and issued for :data:`SMTP_AUDIENCE` with the SMTP scope or role;
* ``POST /revoke`` (RFC 7009).

Access tokens are HS256 JWTs (so ``oauth token`` has claims to show) with a lifetime the test
sets (``lifetime``, down to a second). Runs in a thread of the test process; :meth:`stop` closes
it (and a test can stop it to see "endpoint unreachable").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from lab.ca import CertFiles
from lab.proc import LOOPBACK

SMTP_AUDIENCE = "https://smtp.lab.test"
SMTP_SCOPE = "smtp"
SMTP_ROLE = "SMTP.SendAsApp"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class LabClient:
    client_id: str
    secret: str | None = None  # None: a public client (device-code login)
    roles: tuple[str, ...] = (SMTP_ROLE,)  # app roles granted with admin consent
    audience: str = SMTP_AUDIENCE
    scope: str = SMTP_SCOPE  # what a delegated token carries as scp
    # The mailbox an app-only token may send as (Exchange: Add-MailboxPermission for the app's
    # service principal); None: the token names the app only and no mailbox accepts it.
    mailbox: str | None = None


@dataclass
class ServiceAccount:
    client_email: str
    public_key: rsa.RSAPublicKey
    delegated: bool = True  # domain-wide delegation granted


@dataclass
class Issued:
    subject: str
    client_id: str
    audience: str
    scope: str
    roles: tuple[str, ...]
    expires_at: float
    revoked: bool = False


@dataclass
class DeviceRequest:
    client_id: str
    scope: str
    user_code: str
    expires_at: float
    approved_for: str | None = None
    denied: bool = False


@dataclass
class LabOAuthState:
    lifetime: float = 3600.0
    rotate_refresh_tokens: bool = False
    clients: dict[str, LabClient] = field(default_factory=dict)
    service_accounts: dict[str, ServiceAccount] = field(default_factory=dict)
    access: dict[str, Issued] = field(default_factory=dict)
    refresh: dict[str, Issued] = field(default_factory=dict)
    devices: dict[str, DeviceRequest] = field(default_factory=dict)
    grants: list[str] = field(default_factory=list)  # grant types asked for, in order
    introspections: int = 0


class LabOAuthServer:
    def __init__(self, cert: CertFiles, *, host: str = LOOPBACK, port: int = 0) -> None:
        self.state = LabOAuthState()
        self.lock = threading.Lock()
        self._signing_key = secrets.token_bytes(32)
        # port: the lab's Dovecot is configured for a fixed issuer port (lab/oauth_sasl.py).
        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert.cert), str(cert.key))
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self.host = host
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> LabOAuthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> LabOAuthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, path: str) -> str:
        return f"https://{self.host}:{self.port}{path}"

    @property
    def token_endpoint(self) -> str:
        return self.url("/token")

    @property
    def device_endpoint(self) -> str:
        return self.url("/devicecode")

    @property
    def introspection_endpoint(self) -> str:
        return self.url("/introspect")

    # -- set-up and test controls ------------------------------------------------------------
    def add_client(self, client: LabClient) -> None:
        with self.lock:
            self.state.clients[client.client_id] = client

    def add_service_account(self, email: str, *, delegated: bool = True) -> str:
        """Register a service account; returns its Google-style JSON key file text."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with self.lock:
            self.state.service_accounts[email] = ServiceAccount(email, key.public_key(), delegated)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        return json.dumps(
            {
                "type": "service_account",
                "client_email": email,
                "private_key": pem,
                "private_key_id": "lab-key-1",
                "token_uri": self.token_endpoint,
            }
        )

    def pending_user_codes(self) -> list[str]:
        with self.lock:
            return [d.user_code for d in self.state.devices.values() if d.approved_for is None]

    def approve(self, user_code: str, account: str) -> None:
        with self.lock:
            for device in self.state.devices.values():
                if device.user_code == user_code:
                    device.approved_for = account
                    return
        raise KeyError(user_code)

    def revoke_refresh_tokens(self, subject: str | None = None) -> None:
        with self.lock:
            for issued in self.state.refresh.values():
                if subject is None or issued.subject == subject:
                    issued.revoked = True

    def revoke_access_tokens(self, subject: str) -> None:
        """As a provider does on a password reset: tokens die before their expiry time."""
        with self.lock:
            for issued in self.state.access.values():
                if issued.subject == subject:
                    issued.revoked = True

    def is_active(self, token: str) -> bool:
        with self.lock:
            issued = self.state.access.get(token)
            return issued is not None and _usable_for_smtp(issued)

    # -- issuing -----------------------------------------------------------------------------
    def _jwt(self, issued: Issued) -> str:
        header = {"alg": "HS256", "typ": "JWT"}
        claims: dict[str, Any] = {
            "iss": self.url("/"),
            "aud": issued.audience,
            "sub": issued.subject,
            "azp": issued.client_id,
            "iat": int(time.time()),
            "exp": int(issued.expires_at),
            "jti": secrets.token_hex(8),
            "tid": "lab-tenant",
        }
        if issued.roles:
            claims["roles"] = list(issued.roles)
        if issued.scope:
            claims["scp"] = issued.scope
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = hmac.new(self._signing_key, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(signature)}"

    def issue(self, issued: Issued, *, refresh: bool) -> dict[str, Any]:
        """Record and return a token response (caller holds the lock)."""
        token = self._jwt(issued)
        self.state.access[token] = issued
        answer: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(self.state.lifetime),
            "scope": issued.scope or " ".join(issued.roles),
        }
        if refresh:
            refresh_token = secrets.token_urlsafe(32)
            self.state.refresh[refresh_token] = Issued(
                issued.subject, issued.client_id, issued.audience, issued.scope, (), 0
            )
            answer["refresh_token"] = refresh_token
        return answer

    def verify_assertion(self, assertion: str) -> tuple[ServiceAccount, dict[str, Any]] | None:
        try:
            head, body, sig = assertion.split(".")
            claims = json.loads(_unb64(body))
            account = self.state.service_accounts[claims["iss"]]
            account.public_key.verify(
                _unb64(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (ValueError, KeyError, InvalidSignature):
            return None
        if claims.get("aud") != self.token_endpoint or claims.get("exp", 0) < time.time():
            return None
        return account, claims


def _usable_for_smtp(issued: Issued) -> bool:
    if issued.revoked or issued.expires_at <= time.time():
        return False
    if issued.audience != SMTP_AUDIENCE:
        return False
    return SMTP_ROLE in issued.roles or SMTP_SCOPE in issued.scope.split()


def _error(error: str, description: str = "", status: int = 400) -> tuple[int, dict[str, Any]]:
    return status, {"error": error, "error_description": description}


def _client(server: LabOAuthServer, form: dict[str, str], *, need_secret: bool) -> LabClient | None:
    client = server.state.clients.get(form.get("client_id", ""))
    if client is None:
        return None
    if need_secret or client.secret is not None:
        given = form.get("client_secret", "")
        if client.secret is None or not hmac.compare_digest(given, client.secret):
            return None
    return client


def _grant_client_credentials(server: LabOAuthServer, form: dict[str, str]) -> tuple[int, Any]:
    client = _client(server, form, need_secret=True)
    if client is None:
        return _error("invalid_client", "unknown client or wrong secret", 401)
    issued = Issued(
        client.mailbox or client.client_id,
        client.client_id,
        client.audience,
        "",
        client.roles,
        time.time() + server.state.lifetime,
    )
    return 200, server.issue(issued, refresh=False)


def _grant_refresh(server: LabOAuthServer, form: dict[str, str]) -> tuple[int, Any]:
    client = _client(server, form, need_secret=False)
    if client is None:
        return _error("invalid_client", "unknown client or wrong secret", 401)
    refresh_token = form.get("refresh_token", "")
    stored = server.state.refresh.get(refresh_token)
    if stored is None or stored.revoked or stored.client_id != client.client_id:
        return _error("invalid_grant", "the refresh token is revoked or unknown")
    issued = Issued(
        stored.subject,
        client.client_id,
        client.audience,
        client.scope,
        (),
        time.time() + server.state.lifetime,
    )
    answer = server.issue(issued, refresh=server.state.rotate_refresh_tokens)
    if server.state.rotate_refresh_tokens:
        stored.revoked = True  # a rotated refresh token is good once
    return 200, answer


def _grant_device(server: LabOAuthServer, form: dict[str, str]) -> tuple[int, Any]:
    device = server.state.devices.get(form.get("device_code", ""))
    if device is None or device.expires_at < time.time():
        return _error("expired_token", "the device code expired")
    if device.denied:
        return _error("access_denied")
    if device.approved_for is None:
        return _error("authorization_pending")
    client = server.state.clients[device.client_id]
    del server.state.devices[form["device_code"]]
    issued = Issued(
        device.approved_for,
        client.client_id,
        client.audience,
        client.scope,
        (),
        time.time() + server.state.lifetime,
    )
    return 200, server.issue(issued, refresh=True)


def _grant_jwt_bearer(server: LabOAuthServer, form: dict[str, str]) -> tuple[int, Any]:
    verified = server.verify_assertion(form.get("assertion", ""))
    if verified is None:
        return _error("invalid_grant", "invalid JWT signature or claims")
    account, claims = verified
    if not account.delegated and claims.get("sub"):
        return _error("unauthorized_client", "Client is unauthorized to retrieve access tokens")
    scope = str(claims.get("scope", ""))
    issued = Issued(
        str(claims.get("sub") or account.client_email),
        account.client_email,
        SMTP_AUDIENCE,
        scope,
        (),
        time.time() + server.state.lifetime,
    )
    return 200, server.issue(issued, refresh=False)


_GRANTS = {
    "client_credentials": _grant_client_credentials,
    "refresh_token": _grant_refresh,
    DEVICE_GRANT: _grant_device,
    JWT_BEARER_GRANT: _grant_jwt_bearer,
}


def _token(server: LabOAuthServer, form: dict[str, str]) -> tuple[int, Any]:
    grant = form.get("grant_type", "")
    server.state.grants.append(grant)
    handler = _GRANTS.get(grant)
    if handler is None:
        return _error("unsupported_grant_type")
    return handler(server, form)


def _devicecode(server: LabOAuthServer, form: dict[str, str]) -> tuple[int, Any]:
    client = server.state.clients.get(form.get("client_id", ""))
    if client is None:
        return _error("invalid_client", status=401)
    device_code = secrets.token_urlsafe(24)
    user_code = secrets.token_hex(4).upper()
    server.state.devices[device_code] = DeviceRequest(
        client.client_id, form.get("scope", ""), user_code, time.time() + 600
    )
    return 200, {
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": server.url("/device"),
        "expires_in": 600,
        "interval": 1,
        "message": f"Open {server.url('/device')} and enter {user_code}",
    }


def _introspect(server: LabOAuthServer, form: dict[str, str]) -> tuple[int, Any]:
    server.state.introspections += 1
    issued = server.state.access.get(form.get("token", ""))
    if issued is None or not _usable_for_smtp(issued):
        return 200, {"active": False}
    return 200, {
        "active": True,
        "username": issued.subject,
        "email": issued.subject,
        "aud": issued.audience,
        "exp": int(issued.expires_at),
        "client_id": issued.client_id,
    }


def _revoke(server: LabOAuthServer, form: dict[str, str]) -> tuple[int, Any]:
    token = form.get("token", "")
    for table in (server.state.refresh, server.state.access):
        if token in table:
            table[token].revoked = True
    return 200, {}


_ROUTES = {
    "/token": _token,
    "/devicecode": _devicecode,
    "/introspect": _introspect,
    "/revoke": _revoke,
}


def _handler_for(server: LabOAuthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode("utf-8", "replace")
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            basic = self.headers.get("Authorization", "")
            if basic.startswith("Basic "):  # RFC 6749 2.3.1: client_secret_basic
                user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
                form.setdefault("client_id", user)
                form.setdefault("client_secret", password)
            route = _ROUTES.get(self.path.split("?")[0])
            if route is None:
                status, body = 404, {"error": "not_found"}
            else:
                with server.lock:
                    status, body = route(server, form)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return  # no request lines (they would hold no secret, but they are noise)

    return Handler


def write_key_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path
