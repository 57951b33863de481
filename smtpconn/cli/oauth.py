"""``smtpconn oauth login ADDRESS`` and ``smtpconn oauth token ADDRESS``: the token source of an
address, by hand. Neither ever prints a token, a refresh token or a secret."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from smtpconn.cli.common import command
from smtpconn.cli.render import console, escape, print_json
from smtpconn.errors import CouldNotRun, ExitCode, UsageError
from smtpconn.settings import Settings

if TYPE_CHECKING:
    from smtpconn.oauth.errors import OAuthFailure
    from smtpconn.profile.model import OutboundServer

oauth_app = typer.Typer(
    help="OAuth2 token sources: log a mailbox in (device code), show a token's claims.",
    no_args_is_help=True,
)

AddressArgument = Annotated[
    str, typer.Argument(metavar="ADDRESS", help="A support address with an OAuth token source.")
]


def _oauth_server(settings: Settings, address: str) -> OutboundServer:
    from smtpconn.addresses import parse_address
    from smtpconn.profile.store import load_profile

    profile = load_profile(settings.profile_path).profile
    entry = profile.find(parse_address(address))
    if entry is None:
        raise UsageError(f"{address} is not in the profile", fix="add it with add-address first")
    if entry.outbound is None or entry.outbound.oauth is None:
        raise UsageError(
            f"{address} has no OAuth token source",
            fix="re-add it with --readd and --oauth-flow (see the README: Microsoft 365, "
            "Google Workspace)",
        )
    return entry.outbound


def _spec(settings: Settings, server: OutboundServer) -> Any:
    from smtpconn.profile.oauth import token_spec

    assert server.oauth is not None
    return token_spec(
        server.oauth,
        server.username,
        settings.profile_path.parent,
        ca_file=settings.ca_file,
        insecure=settings.insecure,
        timeout=settings.timeout,
    )


def _could_not(failure: OAuthFailure) -> CouldNotRun | UsageError:
    from smtpconn.oauth.errors import OAuthFailureKind

    if failure.kind is OAuthFailureKind.UNREACHABLE:
        return CouldNotRun(failure.message, fix=failure.fix)
    return UsageError(failure.message, fix=failure.fix)


def register(app: typer.Typer) -> None:
    @command(oauth_app, "login", help="Log the address's mailbox in with a device code and keep "
             "its refresh token in the token cache (0600).")  # fmt: skip
    def login(address: AddressArgument, settings: Settings) -> None:
        from smtpconn.oauth import device
        from smtpconn.oauth.errors import OAuthFailure
        from smtpconn.oauth.providers import Flow

        server = _oauth_server(settings, address)
        assert server.oauth is not None
        if server.oauth.flow is not Flow.REFRESH_TOKEN:
            raise UsageError(
                f"{address} uses the {server.oauth.flow.value} flow: there is nothing to log in",
                fix="oauth login applies to the refresh-token flow",
            )
        spec = _spec(settings, server)
        try:
            started = device.start(spec)
            _show_code(settings, started.verification_uri, started.user_code, started.expires_at)
            device.wait(spec, started, account=server.username)
        except OAuthFailure as failure:
            raise _could_not(failure) from None
        if settings.json:
            print_json({"address": address, "logged_in": True, "token_cache": str(spec.cache_path)})
        else:
            console().print(
                f"[green]✓[/] {escape(server.username)} logged in; refresh token stored in "
                f"{escape(str(spec.cache_path))} (mode 0600). A running relay uses it at its next "
                "retry."
            )

    @command(oauth_app, "token", help="Obtain a token now and show its non-secret claims and "
             "what is missing for SMTP.")  # fmt: skip
    def token(address: AddressArgument, settings: Settings) -> None:
        from smtpconn.oauth.errors import OAuthFailure
        from smtpconn.oauth.source import TokenSource

        server = _oauth_server(settings, address)
        spec = _spec(settings, server)
        try:
            obtained = TokenSource(spec).fetch()
        except OAuthFailure as failure:
            raise _could_not(failure) from None
        document = _token_document(server, obtained.value, obtained.scope, obtained.expires_at)
        if settings.json:
            print_json(document)
        else:
            _print_token(document)
        if document["missing"]:
            raise typer.Exit(int(ExitCode.CHECK_FAILED))

    app.add_typer(oauth_app, name="oauth")


def _show_code(settings: Settings, uri: str, code: str, expires_at: float) -> None:
    minutes = max(1, int((expires_at - time.time()) / 60))
    # On stderr: --json keeps stdout for the final document, and a person still sees the code.
    typer.echo(
        f"Open {uri} and enter the code {code} (valid for {minutes} min); waiting...", err=True
    )


def _token_document(
    server: OutboundServer, value: str, scope: str | None, expires_at: float
) -> dict[str, Any]:
    from smtpconn.oauth.claims import MICROSOFT_SERVER_SIDE, missing_for_smtp, read_claims
    from smtpconn.oauth.providers import Provider

    assert server.oauth is not None
    claims = read_claims(value)
    missing = missing_for_smtp(
        server.oauth.provider, server.oauth.flow, claims, scope, server.oauth.effective_scope
    )
    notes = [MICROSOFT_SERVER_SIDE] if server.oauth.provider is Provider.MICROSOFT365 else []
    return {
        "address": server.username,
        "provider": server.oauth.provider.value,
        "flow": server.oauth.flow.value,
        "token_endpoint": server.oauth.effective_token_endpoint,
        "expires_in": int(expires_at - time.time()),
        "scope": scope,
        "claims": claims,
        "missing": [{"what": m.what, "fix": m.fix} for m in missing],
        "notes": notes,
    }


def _print_token(document: dict[str, Any]) -> None:
    out = console()
    out.print(
        f"[green]✓[/] token obtained for {escape(document['address'])} "
        f"({document['provider']}, {document['flow']}), expires in {document['expires_in']} s"
    )
    for name, value in (document["claims"] or {}).items():
        out.print(f"  {name}: {escape(str(value))}")
    if document["claims"] is None:
        out.print(f"  (opaque token) scope: {escape(str(document['scope']))}")
    for item in document["missing"]:
        out.print(f"[red]✗[/] missing {escape(item['what'])}: {escape(item['fix'])}")
    for note in document["notes"]:
        out.print(f"  note: {escape(note)}")
