"""``smtpconn add-address``: add (or re-add) a support address to the profile."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from smtpconn.cli.common import command
from smtpconn.cli.describe import describe_entry
from smtpconn.cli.render import console, escape, print_json, report_dry_run, warn
from smtpconn.errors import UsageError
from smtpconn.settings import Settings

if TYPE_CHECKING:  # the profile library is imported when the command runs, not for --help
    from rich.console import Console

    from smtpconn.profile.edit import AddPlan, AddRequest, InputNames
    from smtpconn.profile.model import OutboundServer

HELP = """Add a support address to the connector profile, or re-add one (--readd).

Authenticated workflow: give the customer's outbound server (--server HOST[:PORT]), the SMTP AUTH
user (--username) and a secret reference (--secret env:NAME or file:PATH; never the secret).
Port 587 means STARTTLS and 465 implicit TLS unless --security says otherwise.
A bidirectional address also gets inbound credentials for the customer's server to relay with:
the password is shown once (or written to --inbound-password-file) and only its hash is kept.

--workflow forwarding records an address still on standard forwarding; it must later be re-added
with --readd to move it to the authenticated workflow.
"""


def write_password_file(path: Path, password: str, option: str) -> None:
    """Put a generated password in a 0600 file (before the profile is saved: a path that cannot
    be written leaves the profile unchanged). Shared with ``submission-credentials``."""
    from smtpconn.durable import write_atomically

    try:
        write_atomically(path, f"{password}\n".encode(), mode=0o600)
    except OSError as exc:
        raise UsageError(
            f"cannot write {option} {path}: {exc.strerror}",
            fix="choose a path in a folder you can write (nothing was changed)",
        ) from None


def _option_names() -> InputNames:
    """The library's messages name a request's inputs; this command names them by its options
    (typer spells parameter ``dkim_key`` as ``--dkim-key``)."""
    from dataclasses import fields

    from smtpconn.profile.edit import InputNames

    return InputNames(**{f.name: "--" + f.name.replace("_", "-") for f in fields(InputNames)})


def register(app: typer.Typer) -> None:
    @command(app, "add-address", help=HELP)
    def add_address(
        address: Annotated[
            str,
            typer.Argument(
                metavar="ADDRESS", help="The support address, e.g. support@example.com."
            ),
        ],
        settings: Settings,
        mode: Annotated[str | None, typer.Option(help="bidirectional | outbound-only.")] = None,
        workflow: Annotated[
            str, typer.Option(help="authenticated | forwarding.")
        ] = "authenticated",
        server: Annotated[
            str | None, typer.Option(help="Customer's outbound server HOST[:PORT].")
        ] = None,
        username: Annotated[str | None, typer.Option(help="SMTP AUTH user on that server.")] = None,
        secret: Annotated[
            str | None, typer.Option(help="Password/token reference: env:NAME or file:PATH.")
        ] = None,
        security: Annotated[
            str | None, typer.Option(help="starttls | tls. [default: by port]")
        ] = None,
        auth: Annotated[
            str | None,
            typer.Option(help="plain | login | xoauth2 | oauthbearer | auto. [default: auto]"),
        ] = None,
        dkim_selector: Annotated[
            str | None,
            typer.Option(
                help="DKIM selector to sign with; without --dkim-key: the selector your server "
                "signs with (e.g. selector1 for Microsoft 365, google for Google)."
            ),
        ] = None,
        dkim_key: Annotated[
            str | None, typer.Option(help="DKIM private key file (PEM, mode 0600).")
        ] = None,
        inbound_username: Annotated[
            str | None,
            typer.Option(
                help="User name the customer's server relays with. [default: the address]"
            ),
        ] = None,
        inbound_password_file: Annotated[
            Path | None,
            typer.Option(
                help="Write the generated inbound password to this file (0600) instead of showing it."
            ),
        ] = None,
        readd: Annotated[
            bool,
            typer.Option("--readd", help="Re-add an existing address, replacing its settings."),
        ] = False,
        provider: Annotated[
            str | None,
            typer.Option(help="auto | microsoft365 | google | generic. [default: auto]"),
        ] = None,
        oauth_flow: Annotated[
            str | None,
            typer.Option(
                help="OAuth2 token source: client-credentials | refresh-token | service-account."
            ),
        ] = None,
        oauth_tenant: Annotated[
            str | None, typer.Option(help="Microsoft 365 tenant (id or NAME.onmicrosoft.com).")
        ] = None,
        oauth_client_id: Annotated[
            str | None, typer.Option(help="OAuth client (application) id.")
        ] = None,
        oauth_client_secret: Annotated[
            str | None, typer.Option(help="OAuth client secret reference: env:NAME or file:PATH.")
        ] = None,
        oauth_key: Annotated[
            str | None, typer.Option(help="Google service-account JSON key: file:PATH (0600).")
        ] = None,
        oauth_token_cache: Annotated[
            str | None,
            typer.Option(help="Refresh-token cache file (0600) that smtpconn oauth login writes."),
        ] = None,
        oauth_token_endpoint: Annotated[
            str | None, typer.Option(help="Token endpoint URL. [default: the provider's]")
        ] = None,
        oauth_device_endpoint: Annotated[
            str | None, typer.Option(help="Device-code endpoint URL. [default: the provider's]")
        ] = None,
        oauth_scope: Annotated[
            str | None,
            typer.Option(help="Scope to ask for. [default: the provider's SMTP scope]"),
        ] = None,
        max_connections: Annotated[
            int | None,
            typer.Option(
                help="Sending limit: simultaneous connections to the outbound server. "
                "[default: the provider's published limit, else none]"
            ),
        ] = None,
        messages_per_minute: Annotated[
            int | None, typer.Option(help="Sending limit: messages a minute to that server.")
        ] = None,
        recipients_per_message: Annotated[
            int | None,
            typer.Option(help="Sending limit: recipients per transaction (more are split)."),
        ] = None,
        recipients_per_day: Annotated[
            int | None, typer.Option(help="Sending limit: recipients per rolling 24 hours.")
        ] = None,
        unauthenticated_policy: Annotated[
            str | None,
            typer.Option(
                help="Unauthenticated mail whose DMARC fails: tag | hold | reject. [default: tag]"
            ),
        ] = None,
        trusted_arc_sealers: Annotated[
            str | None,
            typer.Option(
                help="ARC sealer domains whose results are believed, comma separated "
                "(e.g. your Microsoft 365 tenant's or google.com)."
            ),
        ] = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Show what would change; write nothing.")
        ] = False,
    ) -> None:
        from dataclasses import replace

        from smtpconn.profile.edit import AddRequest, plan_add
        from smtpconn.profile.store import (
            load_profile,
            locked,
            render_profile,
            write_profile_text,
        )

        request = AddRequest(
            address=address,
            mode=mode,
            workflow=workflow,
            server=server,
            username=username,
            secret=secret,
            security=security,
            auth=auth,
            dkim_selector=dkim_selector,
            dkim_key=dkim_key,
            inbound_username=inbound_username,
            readd=readd,
            provider=provider,
            oauth_flow=oauth_flow,
            oauth_tenant=oauth_tenant,
            oauth_client_id=oauth_client_id,
            oauth_client_secret=oauth_client_secret,
            oauth_key=oauth_key,
            oauth_token_cache=oauth_token_cache,
            oauth_token_endpoint=oauth_token_endpoint,
            oauth_device_endpoint=oauth_device_endpoint,
            oauth_scope=oauth_scope,
            max_connections=max_connections,
            messages_per_minute=messages_per_minute,
            recipients_per_message=recipients_per_message,
            recipients_per_day=recipients_per_day,
            unauthenticated_policy=unauthenticated_policy,
            trusted_arc_sealers=trusted_arc_sealers,
        )
        # Asked before the profile is locked: a slow resolver must not hold other edits up.
        request = replace(request, mx_hosts=_provider_mx(settings, request))
        path = settings.profile_path
        with locked(path):
            loaded = load_profile(path, must_exist=False)
            plan = plan_add(loaded.profile, request, base_dir=path.parent, names=_option_names())
            if inbound_password_file is not None and plan.new_password is None:
                raise UsageError(
                    "--inbound-password-file: no new inbound password is generated for this address",
                    fix="it only applies to bidirectional addresses with their own credentials",
                )
            new_text = render_profile(plan.profile, loaded.raw, before=loaded.profile)
            if dry_run:
                _report_dry_run(settings, plan, loaded.raw.decode("utf-8"), new_text)
                return
            if inbound_password_file is not None and plan.new_password is not None:
                assert plan.entry.inbound is not None
                write_password_file(
                    inbound_password_file, plan.new_password, "--inbound-password-file"
                )
            try:
                write_profile_text(path, new_text)
            except BaseException:
                if inbound_password_file is not None:
                    inbound_password_file.unlink(missing_ok=True)
                raise
        _report(settings, plan, inbound_password_file)


def _provider_mx(settings: Settings, request: AddRequest) -> tuple[str, ...]:
    """The domain's MX names when --provider auto could use them: to fill in a missing --server
    (Microsoft 365, Google) or to choose an OAuth token source's endpoints. Nothing is asked
    when the provider is named or the server already says it."""
    from smtpconn.addresses import parse_address, parse_host_port
    from smtpconn.dns.resolvers import mx_hosts
    from smtpconn.oauth.providers import provider_for_server
    from smtpconn.profile.edit_oauth import AUTO

    if (request.provider or AUTO).strip().lower() != AUTO:
        return ()
    if request.workflow.strip().lower() != "authenticated":
        return ()
    try:
        domain = parse_address(request.address).domain
        if request.server:
            if not request.oauth().given():
                return ()
            if provider_for_server(parse_host_port(request.server, default_port=None)[0]):
                return ()
    except UsageError:
        return ()  # plan_add says what is wrong with it
    hosts, problem = mx_hosts(domain, settings.resolvers, timeout=settings.timeout)
    if problem is not None:
        warn(
            f"--provider auto: the MX of {domain} could not be read ({problem}); "
            "give --provider or --server"
        )
    return hosts


def _report_dry_run(settings: Settings, plan: AddPlan, old_text: str, new_text: str) -> None:
    inbound = plan.entry.inbound
    report_dry_run(
        settings.profile_path,
        old_text,
        new_text,
        json_output=settings.json,
        warnings=plan.warnings,
        new_hashes=[inbound.password_hash] if plan.new_password and inbound else [],
    )


def _report(settings: Settings, plan: AddPlan, password_file: Path | None) -> None:
    action = "re-added" if plan.replaced is not None else "added"
    for message in plan.warnings:
        warn(message)
    if settings.json:
        print_json(_report_document(settings, plan, password_file, action))
    else:
        _print_report(settings, plan, password_file, action)


def _report_document(
    settings: Settings, plan: AddPlan, password_file: Path | None, action: str
) -> dict[str, Any]:
    entry = plan.entry
    document: dict[str, Any] = {
        "action": action,
        "profile": str(settings.profile_path),
        **describe_entry(entry),
        "warnings": plan.warnings,
    }
    if plan.replaced is not None:
        document["previous_workflow"] = plan.replaced.workflow.value
    if entry.inbound is not None:
        document["inbound_username"] = entry.inbound.username
        # What the relay will accept this login for (it refuses any other recipient).
        document["inbound_login_scope"] = [a.ascii for a in plan.login_scope]
        if plan.shared_with is not None:
            document["inbound_credentials_shared_with"] = plan.shared_with.ascii
        elif password_file is not None:
            document["inbound_password_file"] = str(password_file)
        else:
            document["inbound_password"] = plan.new_password
    return document


def _print_report(
    settings: Settings, plan: AddPlan, password_file: Path | None, action: str
) -> None:
    entry = plan.entry
    out = console()
    moved = ""
    if plan.replaced is not None and plan.replaced.workflow is not entry.workflow:
        moved = f" (moved from {plan.replaced.workflow.value})"
    out.print(
        f"[green]✓[/] {action.capitalize()} [bold]{escape(entry.address.display)}[/]"
        f" — {entry.mode.value}, {entry.workflow.value}{moved} — in {escape(str(settings.profile_path))}"
    )
    if entry.address.display != entry.address.ascii:
        out.print(f"  stored as {escape(entry.address.ascii)}")
    if entry.outbound is not None:
        o = entry.outbound
        out.print(
            f"  outbound: {escape(o.host)}:{o.port} ({o.security.value}, auth {o.auth.value}) "
            f"as {escape(o.username)}, " + _credential_text(o)
        )
    if entry.inbound is not None:
        _print_inbound(out, plan, entry.inbound.username, password_file)


def _credential_text(o: OutboundServer) -> str:
    if o.oauth is None:
        return f"secret {escape(str(o.secret))}"
    return f"OAuth {o.oauth.provider.value} {o.oauth.flow.value}"


def _print_inbound(out: Console, plan: AddPlan, username: str, password_file: Path | None) -> None:
    """The inbound login: shared with other addresses, or new (its password shown once)."""
    if plan.shared_with is not None:
        others = [a.display for a in plan.login_scope if a.key != plan.entry.address.key]
        reach = "both" if len(others) == 1 else f"all {len(others) + 1} of them"
        out.print(
            f"  inbound: shares the inbound login {escape(username)} with "
            f"{escape(', '.join(others))}: that login may now deliver to {reach}"
        )
        return
    out.print(
        "\n[bold]Inbound credentials for the customer's server[/] (relaying to the help desk):"
    )
    out.print(f"  user name: {escape(username)}")
    if password_file is not None:
        out.print(f"  password:  written to {escape(str(password_file))} (mode 0600)")
    else:
        out.print(f"  password:  {escape(plan.new_password or '')}")
        out.print("[yellow]  Shown once: only its hash is kept. Store it now.[/]")
    out.print(
        "  Postfix: put them in smtp_sasl_password_maps for the relay's host and set "
        "smtp_sasl_auth_enable = yes, smtp_tls_security_level = encrypt."
    )
