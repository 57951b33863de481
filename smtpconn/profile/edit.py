"""Adding, re-adding and removing support addresses: pure functions from profile to profile.

The rules for re-adding live here, in one place: an address known under standard forwarding is
never reused silently; ``readd`` moves it to the authenticated workflow keeping nothing but what
the new request gives, and replaces an authenticated address's settings the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from smtpconn.addresses import MailAddress, parse_address, parse_host_port
from smtpconn.errors import UsageError
from smtpconn.oauth.providers import SENDING_LIMITS, Provider
from smtpconn.profile.edit_oauth import OAuthInputs, build_oauth, choose_provider, preset_server
from smtpconn.profile.keys import declared_keys
from smtpconn.profile.model import (
    DEFAULT_PORTS,
    AuthMechanism,
    DkimSettings,
    InboundCredentials,
    Mode,
    OutboundServer,
    Profile,
    Security,
    SendingLimits,
    SupportAddress,
    UnauthenticatedPolicy,
    Workflow,
    default_security_for_port,
    parse_sealers,
)
from smtpconn.profile.oauth import OAuthSettings
from smtpconn.profile.secrets import (
    SecretRef,
    check_secret_ref,
    generate_password,
    hash_password,
    parse_secret_ref,
)

_SELECTOR = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_USERNAME = re.compile(r"[^\x00-\x20\x7f]{1,255}")


def check_username(value: str, option: str) -> str:
    """A user name as SMTP AUTH carries it: 1-255 characters, no spaces or control characters."""
    if not _USERNAME.fullmatch(value):
        raise UsageError(f"{option} must be 1-255 characters without spaces or control characters")
    return value


@dataclass(frozen=True, slots=True)
class InputNames:
    """How the caller names each input of a request in messages. The library speaks of the
    :class:`AddRequest` fields; the CLI passes its option names, so that a library error never
    names a command-line flag and the command's messages still do."""

    mode: str = "mode"
    workflow: str = "workflow"
    server: str = "server"
    username: str = "username"
    secret: str = "secret"
    security: str = "security"
    auth: str = "auth"
    dkim_selector: str = "dkim_selector"
    dkim_key: str = "dkim_key"
    inbound_username: str = "inbound_username"
    readd: str = "readd"
    provider: str = "provider"
    oauth_flow: str = "oauth_flow"
    oauth_tenant: str = "oauth_tenant"
    oauth_client_id: str = "oauth_client_id"
    oauth_client_secret: str = "oauth_client_secret"
    oauth_key: str = "oauth_key"
    oauth_token_cache: str = "oauth_token_cache"
    oauth_token_endpoint: str = "oauth_token_endpoint"
    oauth_device_endpoint: str = "oauth_device_endpoint"
    oauth_scope: str = "oauth_scope"
    max_connections: str = "max_connections"
    messages_per_minute: str = "messages_per_minute"
    recipients_per_message: str = "recipients_per_message"
    recipients_per_day: str = "recipients_per_day"
    unauthenticated_policy: str = "unauthenticated_policy"
    trusted_arc_sealers: str = "trusted_arc_sealers"

    def oauth(self) -> OAuthInputs:
        return _oauth_inputs(self)


@dataclass(frozen=True, slots=True)
class AddRequest:
    """What ``add-address`` was asked to do, as the user typed it (validated by ``plan_add``)."""

    address: str
    mode: str | None = None
    workflow: str = "authenticated"
    server: str | None = None
    username: str | None = None
    secret: str | None = None
    security: str | None = None
    auth: str | None = None
    dkim_selector: str | None = None
    dkim_key: str | None = None
    inbound_username: str | None = None
    readd: bool = False
    provider: str | None = None  # auto (the default) | microsoft365 | google | generic
    oauth_flow: str | None = None
    oauth_tenant: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = None
    oauth_key: str | None = None
    oauth_token_cache: str | None = None
    oauth_token_endpoint: str | None = None
    oauth_device_endpoint: str | None = None
    oauth_scope: str | None = None  # [default: the provider's SMTP scope for the flow]
    # Sending limits of the outbound server ([addresses.outbound.limits]); the provider's
    # published ones fill what is not given.
    max_connections: int | None = None
    messages_per_minute: int | None = None
    recipients_per_message: int | None = None
    recipients_per_day: int | None = None
    unauthenticated_policy: str | None = None  # tag (the default) | hold | reject
    trusted_arc_sealers: str | None = None  # sealer domains, separated by commas
    mx_hosts: tuple[str, ...] = ()  # the domain's MX names, for provider auto (the caller looks)

    def oauth(self) -> OAuthInputs:
        return _oauth_inputs(self)


@dataclass(frozen=True, slots=True)
class AddPlan:
    profile: Profile
    entry: SupportAddress
    replaced: SupportAddress | None
    new_password: str | None  # the inbound password to show once; None when shared or not needed
    shared_with: MailAddress | None = None  # inbound credentials shared with this address
    # Every address the entry's inbound login may deliver to once the plan is saved (the relay
    # scopes a login to the entries holding its user name and hash); empty without a login.
    login_scope: tuple[MailAddress, ...] = ()
    warnings: list[str] = field(default_factory=list)


_E = TypeVar("_E", Mode, Workflow, Security, AuthMechanism, UnauthenticatedPolicy)


def _choice(enum: type[_E], value: str, option: str) -> _E:
    try:
        return enum(value.strip().lower())
    except ValueError:
        choices = " | ".join(m.value for m in enum)
        raise UsageError(f"{option} {value!r} is not valid", fix=f"use one of: {choices}") from None


def _check_dkim_key(path_text: str, base_dir: Path) -> Path:
    # Paths typed on the command line are relative to where the user is; the profile stores them
    # absolute so that it means the same thing whichever folder the relay later runs from.
    full = Path(path_text).expanduser().absolute()
    # A private key is a secret like any other: same existence and permission rules.
    check_secret_ref(parse_secret_ref(f"file:{full}"), base_dir)
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        load_pem_private_key(full.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise UsageError(
            f"DKIM key {full} is not an unencrypted PEM private key",
            fix="give the PEM file of the RSA or Ed25519 key you sign with (no passphrase)",
        ) from None
    return full


def _outbound(
    request: AddRequest,
    provider: Provider | None,
    base_dir: Path,
    warnings: list[str],
    names: InputNames,
) -> OutboundServer:
    # Explicit options win over the provider's preset.
    request = replace(request, server=request.server or preset_server(provider))
    oauth = _oauth(request, provider, base_dir, warnings, names)
    missing = [
        option
        for option, value in (
            (names.server, request.server),
            (names.username, request.username),
            (names.secret, request.secret or oauth),
        )
        if not value
    ]
    if missing:
        raise UsageError(
            f"the authenticated workflow needs {', '.join(missing)}",
            fix="give the customer's outbound server, the SMTP AUTH user name and a secret "
            f"reference, e.g. {names.server} mail.example.com {names.username} helpdesk "
            f"{names.secret} env:SMTP_PASSWORD",
        )
    assert request.server and request.username
    security = _choice(Security, request.security, names.security) if request.security else None
    host, port = parse_host_port(request.server, default_port=None)
    if security is None:
        security = default_security_for_port(port)
    if port is None:
        port = DEFAULT_PORTS[security]
    elif (port, security) in ((465, Security.STARTTLS), (587, Security.TLS)):
        warnings.append(
            f"port {port} normally uses {'implicit TLS' if port == 465 else 'STARTTLS'}; "
            f"{names.security} {security.value} was kept as given"
        )
    auth = _choice(AuthMechanism, request.auth, names.auth) if request.auth else AuthMechanism.AUTO
    check_username(request.username, names.username)
    limits = _limits(request, provider, names)
    if oauth is not None:
        return OutboundServer(
            host=host,
            port=port,
            security=security,
            auth=_oauth_auth(auth, names),
            username=request.username,
            secret=None,
            oauth=oauth,
            limits=limits,
        )
    assert request.secret
    secret = parse_secret_ref(request.secret)
    if secret.scheme == "file":
        secret = SecretRef("file", str(Path(secret.target).expanduser().absolute()))
    warnings.extend(check_secret_ref(secret, base_dir))
    return OutboundServer(
        host=host,
        port=port,
        security=security,
        auth=auth,
        username=request.username,
        secret=secret,
        limits=limits,
    )


# Exchange Online outbound connectors and Gmail routing rules have no setting for SMTP AUTH
# credentials, so these providers' servers cannot log in to the relay's inbound listener.
ROUTING_WITHOUT_AUTH = {
    Provider.MICROSOFT365: "Exchange Online outbound connectors",
    Provider.GOOGLE: "Gmail routing rules",
}


def routing_advice(provider: Provider, names: InputNames) -> str:
    """Why bidirectional mode cannot work from a hosted provider, and what to use instead."""
    return (
        f"{provider.value}: {ROUTING_WITHOUT_AUTH[provider]} have no setting for SMTP AUTH "
        "credentials, so mail routed from them cannot log in to the relay as bidirectional "
        f"mode requires (it would be refused); use {names.mode} outbound-only: support mail "
        "reaches the help desk by forwarding, and replies still go out through the "
        "provider's server with this address's login"
    )


def _limits(request: AddRequest, provider: Provider | None, names: InputNames) -> SendingLimits:
    """The limits asked for over the provider's published ones (explicit values win)."""
    given: dict[str, int | None] = {}
    for key in declared_keys(SendingLimits):
        value = getattr(request, key.name)
        if value is not None and (isinstance(value, bool) or value <= 0):
            raise UsageError(
                f"{getattr(names, key.name)} must be a positive whole number, not {value!r}",
                fix="leave it out for no limit of that kind",
            )
        given[key.name] = value
    preset = SENDING_LIMITS.get(provider) if provider is not None else None
    return SendingLimits(**given).over(SendingLimits(**(preset or {})))


def _oauth(
    request: AddRequest,
    provider: Provider | None,
    base_dir: Path,
    warnings: list[str],
    names: InputNames,
) -> OAuthSettings | None:
    """The token source the OAuth options describe, None without them."""
    inputs = request.oauth()
    if not inputs.given():
        return None
    if request.secret:
        raise UsageError(
            f"{names.secret} and {names.oauth_flow} exclude each other",
            fix="an OAuth token source replaces the static secret: drop one of them",
        )
    return build_oauth(inputs, provider, names.oauth(), base_dir, warnings)


def _oauth_auth(auth: AuthMechanism, names: InputNames) -> AuthMechanism:
    if auth is AuthMechanism.OAUTHBEARER:
        return auth
    if auth not in (AuthMechanism.AUTO, AuthMechanism.XOAUTH2):
        raise UsageError(
            f"{names.auth} {auth.value} cannot log in with an OAuth token",
            fix=f"drop {names.auth} or use {names.auth} xoauth2 (or oauthbearer)",
        )
    return AuthMechanism.XOAUTH2


def plan_add(
    profile: Profile, request: AddRequest, *, base_dir: Path, names: InputNames = InputNames()
) -> AddPlan:
    """Validate ``request`` against ``profile`` and return the profile it would produce;
    messages name the request's inputs as ``names`` says."""
    address = parse_address(request.address)
    workflow = _choice(Workflow, request.workflow, names.workflow)
    existing = profile.find(address)
    _check_readd(address, workflow, existing, request.readd, names)
    if workflow is Workflow.FORWARDING:
        return _plan_forwarding(profile, request, address, existing, names)

    warnings: list[str] = []
    if not request.mode:
        raise UsageError(
            f"{names.mode} is required",
            fix=f"use {names.mode} bidirectional or {names.mode} outbound-only",
        )
    mode = _choice(Mode, request.mode, names.mode)
    provider = choose_provider(request.provider, request.server, request.mx_hosts, names.provider)
    outbound = _outbound(request, provider, base_dir, warnings, names)
    if mode is Mode.BIDIRECTIONAL and provider in ROUTING_WITHOUT_AUTH:
        warnings.append(routing_advice(provider, names))
    dkim = _dkim(request, base_dir, names)
    inbound = _inbound(profile, request, address, mode, names)
    entry = SupportAddress(
        address=address,
        mode=mode,
        workflow=workflow,
        outbound=outbound,
        dkim=dkim,
        inbound=inbound.credentials,
        **_inbound_policy(request, names),
    )
    if mode is Mode.BIDIRECTIONAL and entry.unauthenticated_policy is not UnauthenticatedPolicy.TAG:
        warnings.append(_policy_unused(entry.unauthenticated_policy, names))
    new_profile = profile.with_address(entry)
    return AddPlan(
        profile=new_profile,
        entry=entry,
        replaced=existing,
        new_password=inbound.new_password,
        shared_with=inbound.shared_with,
        login_scope=login_scope(new_profile, inbound.credentials),
        warnings=warnings,
    )


def _check_readd(
    address: MailAddress,
    workflow: Workflow,
    existing: SupportAddress | None,
    readd: bool,
    names: InputNames,
) -> None:
    """``readd`` is required exactly when the address is already in the profile."""
    if existing is not None and not readd:
        if existing.workflow is Workflow.FORWARDING and workflow is Workflow.AUTHENTICATED:
            raise UsageError(
                f"{address.display} is set up under standard forwarding and can't be reused as is",
                fix=f"re-add it under the authenticated workflow: repeat this command with {names.readd}",
            )
        raise UsageError(
            f"{address.display} already exists ({existing.workflow.value}, {existing.mode.value})",
            fix=f"add {names.readd} to replace its settings, or remove-address it first",
        )
    if existing is None and readd:
        raise UsageError(
            f"{names.readd}: {address.display} is not in the profile",
            fix=f"add it without {names.readd}",
        )


def _plan_forwarding(
    profile: Profile,
    request: AddRequest,
    address: MailAddress,
    existing: SupportAddress | None,
    names: InputNames,
) -> AddPlan:
    """Standard forwarding: no server, key or login of the customer's; always outbound-only."""
    given = [
        option
        for option, value in (
            (names.server, request.server),
            (names.username, request.username),
            (names.secret, request.secret),
            (names.dkim_selector, request.dkim_selector),
            (names.dkim_key, request.dkim_key),
            (names.inbound_username, request.inbound_username),
            (names.oauth_flow, request.oauth().given() or None),
            *(
                (getattr(names, k.name), getattr(request, k.name))
                for k in declared_keys(SendingLimits)
            ),
        )
        if value
    ]
    if given:
        raise UsageError(
            f"{', '.join(given)} cannot be used with {names.workflow} forwarding",
            fix="standard forwarding has no server of yours; drop those options, or add the "
            "address under the authenticated workflow",
        )
    mode = _choice(Mode, request.mode, names.mode) if request.mode else Mode.OUTBOUND_ONLY
    if mode is Mode.BIDIRECTIONAL:
        raise UsageError(
            f"{names.workflow} forwarding is always outbound-only",
            fix=f"standard forwarding has no authenticated inbound leg; drop {names.mode}",
        )
    entry = SupportAddress(
        address=address, mode=mode, workflow=Workflow.FORWARDING, **_inbound_policy(request, names)
    )
    return AddPlan(
        profile=profile.with_address(entry),
        entry=entry,
        replaced=existing,
        new_password=None,
        warnings=[],
    )


def _policy_unused(policy: UnauthenticatedPolicy, names: InputNames) -> str:
    # Kept, not refused: it takes effect if the address later moves to the forwarding workflow.
    return (
        f"{names.unauthenticated_policy} {policy.value} has no effect on a bidirectional address "
        "under the authenticated workflow: mail that does not log in is refused at RCPT (530) "
        "and the customer's logged-in mail is never judged. It applies on the forwarding path: "
        "outbound-only addresses and addresses under the forwarding workflow"
    )


def _inbound_policy(request: AddRequest, names: InputNames) -> dict[str, Any]:
    """The unauthenticated-mail policy fields of the entry (defaults when not given)."""
    policy = UnauthenticatedPolicy.TAG
    if request.unauthenticated_policy:
        policy = _choice(
            UnauthenticatedPolicy, request.unauthenticated_policy, names.unauthenticated_policy
        )
    sealers: tuple[str, ...] = ()
    if request.trusted_arc_sealers:
        try:
            sealers = parse_sealers(s for s in request.trusted_arc_sealers.split(",") if s.strip())
        except ValueError as exc:
            raise UsageError(
                f"{names.trusted_arc_sealers}: {exc}",
                fix="give sealer domains separated by commas, e.g. microsoft.com,google.com",
            ) from None
    return {"unauthenticated_policy": policy, "trusted_arc_sealers": sealers}


def _dkim(request: AddRequest, base_dir: Path, names: InputNames) -> DkimSettings | None:
    if request.dkim_key and not request.dkim_selector:
        raise UsageError(
            f"{names.dkim_key} needs {names.dkim_selector}",
            fix="give the selector the key is published under",
        )
    if not request.dkim_selector:
        return None
    if not _SELECTOR.fullmatch(request.dkim_selector):
        raise UsageError(
            f"DKIM selector {request.dkim_selector!r} is not a valid DNS label",
            fix="use letters, digits and hyphens, e.g. smtpconn2026",
        )
    if not request.dkim_key:  # the customer's server signs with this selector
        return DkimSettings(selector=request.dkim_selector)
    key_path = _check_dkim_key(request.dkim_key, base_dir)
    return DkimSettings(selector=request.dkim_selector, private_key=key_path)


@dataclass(frozen=True, slots=True)
class _Inbound:
    credentials: InboundCredentials | None = None
    new_password: str | None = None  # generated now, to show once
    shared_with: MailAddress | None = None  # the address whose login is shared


def _inbound(
    profile: Profile, request: AddRequest, address: MailAddress, mode: Mode, names: InputNames
) -> _Inbound:
    """The inbound login of a bidirectional address: an existing one with the same user name is
    shared, else a new password is generated."""
    if mode is not Mode.BIDIRECTIONAL:
        if request.inbound_username:
            raise UsageError(
                f"{names.inbound_username} only applies to bidirectional addresses",
                fix="outbound-only addresses receive by ordinary forwarding; drop the option",
            )
        return _Inbound()
    username = check_username(request.inbound_username or address.ascii, names.inbound_username)
    for other in profile.addresses:
        if other.address.key == address.key or other.inbound is None:
            continue
        if other.inbound.username == username:
            # One customer server relays for several support addresses with one login:
            # share the existing hash rather than invalidating the password it already has.
            return _Inbound(other.inbound, shared_with=other.address)
    new_password = generate_password()
    credentials = InboundCredentials(
        username=username,
        password_hash=hash_password(new_password),
        issued_at=datetime.now(UTC).replace(microsecond=0),  # `status` shows the password's age
    )
    return _Inbound(credentials, new_password=new_password)


def login_scope(profile: Profile, inbound: InboundCredentials | None) -> tuple[MailAddress, ...]:
    """The addresses an inbound login may deliver to: the entries holding the same user name and
    the same hash (what the relay enforces, see ``RelayConfig.inbound_credentials``)."""
    if inbound is None:
        return ()
    return tuple(e.address for e in profile.addresses if e.inbound == inbound)


def plan_remove(profile: Profile, address_text: str) -> tuple[Profile, SupportAddress]:
    address = parse_address(address_text)
    existing = profile.find(address)
    if existing is None:
        known = ", ".join(e.address.display for e in profile.addresses) or "none"
        raise UsageError(
            f"{address.display} is not in the profile", fix=f"addresses in the profile: {known}"
        )
    return profile.without_address(address), existing


# AddRequest and InputNames spell the OAuth inputs alike; OAuthInputs drops the "oauth_" prefix.
_OAUTH_FIELDS = (
    "provider",
    "oauth_flow",
    "oauth_tenant",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_key",
    "oauth_token_cache",
    "oauth_token_endpoint",
    "oauth_device_endpoint",
    "oauth_scope",
)


def _oauth_inputs(source: AddRequest | InputNames) -> OAuthInputs:
    return OAuthInputs(*(getattr(source, name) for name in _OAUTH_FIELDS))
