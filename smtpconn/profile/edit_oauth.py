"""``add-address``'s OAuth inputs: the provider preset and the token source, validated.

Pure apart from reading the referenced files (as the rest of ``plan_add`` does): a secret is a
reference (a literal is refused without being echoed), a key file must be private and a
service-account key, and every rule of :func:`smtpconn.profile.oauth.oauth_problems` is reported
at once, each naming its option.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smtpconn.errors import UsageError
from smtpconn.oauth.errors import OAuthFailure
from smtpconn.oauth.providers import SMTP_SERVERS, Flow, Provider, provider_for_mx
from smtpconn.oauth.providers import provider_for_server as _provider_for_server
from smtpconn.oauth.source import parse_service_account_key
from smtpconn.profile.oauth import OAuthSettings, check_endpoint, oauth_problems
from smtpconn.profile.secrets import SecretRef, check_secret_ref, parse_secret_ref

AUTO = "auto"


@dataclass(frozen=True, slots=True)
class OAuthInputs:
    """The OAuth options as typed, and how the caller names each one in messages."""

    provider: str | None = None
    flow: str | None = None
    tenant: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    key: str | None = None
    token_cache: str | None = None
    token_endpoint: str | None = None
    device_endpoint: str | None = None
    scope: str | None = None

    def given(self) -> bool:
        """Any token-source option (the provider alone is only a server preset)."""
        return any(
            v is not None
            for v in (
                self.flow,
                self.tenant,
                self.client_id,
                self.client_secret,
                self.key,
                self.token_cache,
                self.token_endpoint,
                self.device_endpoint,
                self.scope,
            )
        )


def choose_provider(
    typed: str | None, server: str | None, mx_hosts: tuple[str, ...], option: str
) -> Provider | None:
    """The provider asked for, or for ``auto`` the one the server name or the domain's MX
    points at (None: nothing known)."""
    text = (typed or AUTO).strip().lower()
    if text != AUTO:
        try:
            return Provider(text)
        except ValueError:
            choices = " | ".join([AUTO, *(p.value for p in Provider)])
            raise UsageError(
                f"{option} {typed!r} is not valid", fix=f"use one of: {choices}"
            ) from None
    if server:
        found = _provider_for_server(server.rsplit(":", 1)[0] if server.count(":") == 1 else server)
        if found is not None:
            return found
    return provider_for_mx(list(mx_hosts))


def preset_server(provider: Provider | None) -> str | None:
    """The submission server of a known provider, HOST:PORT (STARTTLS on 587)."""
    if provider is None or provider not in SMTP_SERVERS:
        return None
    host, port = SMTP_SERVERS[provider]
    return f"{host}:{port}"


def _reference(text: str, option: str, base_dir: Path, warnings: list[str]) -> SecretRef:
    try:
        ref = parse_secret_ref(text)
    except UsageError as exc:  # never echoes the value; says which option held it
        raise UsageError(f"{option}: {exc.message}", fix=exc.fix) from None
    if ref.scheme == "file":
        ref = SecretRef("file", str(Path(ref.target).expanduser().absolute()))
    warnings.extend(check_secret_ref(ref, base_dir))
    return ref


def _key(text: str, option: str, base_dir: Path) -> SecretRef:
    ref = parse_secret_ref(text)
    if ref.scheme != "file":
        raise UsageError(f"{option} must be file:PATH (the service account's JSON key file)")
    ref = SecretRef("file", str(Path(ref.target).expanduser().absolute()))
    check_secret_ref(ref, base_dir)
    try:
        parse_service_account_key(Path(ref.target).read_text(encoding="utf-8"), ref.target)
    except OAuthFailure as exc:
        raise UsageError(f"{option}: {exc.message}", fix=exc.fix) from None
    except (OSError, UnicodeDecodeError):
        raise UsageError(f"{option}: {ref.target} cannot be read as text") from None
    return ref


def _scope(text: str | None, option: str) -> str | None:
    """Space-separated scope tokens (RFC 6749 3.3: printable ASCII without " or \\)."""
    if text is None:
        return None
    words = text.split()
    if not words or any(
        not w.isprintable() or not w.isascii() or set(w) & {'"', "\\"} for w in words
    ):
        raise UsageError(
            f"{option} must be space-separated scope names",
            fix="e.g. https://outlook.office365.com/.default, or leave it out for the provider's",
        )
    return " ".join(words)


def _endpoint(text: str | None, option: str) -> str | None:
    if text is None:
        return None
    try:
        return check_endpoint(text)
    except ValueError as exc:
        raise UsageError(f"{option} {exc}", fix="give the provider's https:// token URL") from None


def build_oauth(
    inputs: OAuthInputs,
    provider: Provider | None,
    names: OAuthInputs,
    base_dir: Path,
    warnings: list[str],
) -> OAuthSettings:
    """The token source the options describe; every broken rule in one message."""
    if not inputs.flow:
        raise UsageError(
            f"the OAuth options need {names.flow}",
            fix=f"use {names.flow} client-credentials, refresh-token or service-account",
        )
    try:
        flow = Flow(inputs.flow.strip().lower())
    except ValueError:
        choices = " | ".join(f.value for f in Flow)
        raise UsageError(
            f"{names.flow} {inputs.flow!r} is not valid", fix=f"use one of: {choices}"
        ) from None
    settings = OAuthSettings(
        provider=provider or Provider.GENERIC,
        flow=flow,
        tenant=inputs.tenant,
        client_id=inputs.client_id,
        client_secret=(
            _reference(inputs.client_secret, str(names.client_secret), base_dir, warnings)
            if inputs.client_secret
            else None
        ),
        key=_key(inputs.key, str(names.key), base_dir) if inputs.key else None,
        token_cache=Path(inputs.token_cache).expanduser().absolute()
        if inputs.token_cache
        else None,
        token_endpoint=_endpoint(inputs.token_endpoint, str(names.token_endpoint)),
        device_endpoint=_endpoint(inputs.device_endpoint, str(names.device_endpoint)),
        scope=_scope(inputs.scope, str(names.scope)),
    )
    problems = oauth_problems(settings)
    if problems:
        raise UsageError(
            "; ".join(f"{getattr(names, name)} {message}" for name, message in problems),
            fix="nothing was changed",
        )
    if settings.token_cache is not None and not settings.token_cache.exists():
        warnings.append(
            f"no refresh token yet: run smtpconn oauth login for this address (it writes "
            f"{settings.token_cache})"
        )
    return settings
