"""``smtpconn relay``: run the relay from the profile (or only check that it could run)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from smtpconn.cli.common import command
from smtpconn.settings import Settings

if TYPE_CHECKING:
    import asyncio

HELP = """Run the relay: receive inbound support mail (TLS + AUTH from the customer's server, or
plain forwarding for outbound-only addresses), hand it to the help desk through the configured
sink, and deliver the help desk's replies through each address's customer server.

Settings come from the profile's [relay] table; the options below override them. --check
validates the configuration (TLS certificate, spool, sink, secrets) and exits: 0 ready, 2 not.
Logs go to stderr as key=value lines. SIGTERM stops cleanly; no acknowledged message is lost.
SIGHUP, or --reload (which signals the relay running on the profile's spool), re-reads the
profile: new sessions see added, removed and re-added addresses and rotated credentials.
"""


def register(app: typer.Typer) -> None:
    @command(app, "relay", help=HELP)
    def relay(
        settings: Settings,
        check: Annotated[bool, typer.Option("--check", help="Validate and exit.")] = False,
        reload: Annotated[
            bool,
            typer.Option("--reload", help="Make the running relay re-read the profile, and exit."),
        ] = False,
        inbound_listen: Annotated[
            str | None, typer.Option(help="IP:PORT for the customer's server and forwarding.")
        ] = None,
        inbound_tls_listen: Annotated[
            str | None, typer.Option(help="IP:PORT for implicit-TLS inbound (optional).")
        ] = None,
        submission_listen: Annotated[
            str | None, typer.Option(help="IP:PORT (loopback) where the help desk submits replies.")
        ] = None,
        tls_cert: Annotated[str | None, typer.Option(help="The relay's certificate (PEM).")] = None,
        tls_key: Annotated[str | None, typer.Option(help="Its private key (PEM).")] = None,
        spool: Annotated[str | None, typer.Option(help="Spool folder.")] = None,
        hostname: Annotated[str | None, typer.Option(help="Name in banners and headers.")] = None,
        max_message_size: Annotated[int | None, typer.Option(help="Bytes.")] = None,
        retry_initial: Annotated[
            float | None, typer.Option(help="Seconds before the first retry (doubles each time).")
        ] = None,
        retry_window: Annotated[
            float | None, typer.Option(help="Seconds after which an undelivered reply bounces.")
        ] = None,
        max_connections_per_ip: Annotated[int | None, typer.Option()] = None,
        processes: Annotated[
            str | None,
            typer.Option(
                help='Processes accepting inbound mail: a number, or "auto" (CPUs, max 4).'
            ),
        ] = None,
        log_format: Annotated[
            str, typer.Option(help="Log lines as key-value (default) or json (one object a line).")
        ] = "key-value",
    ) -> None:
        import asyncio
        import os

        from smtpconn.cli.render import console, print_json
        from smtpconn.errors import UsageError
        from smtpconn.profile.store import load_profile
        from smtpconn.relay.config import (
            RelayConfig,
            RelayOverrides,
            build_config,
            check_config,
        )
        from smtpconn.relay.log import LogFormat, configure_logging
        from smtpconn.relay.runtime import Relay, run_shard, run_until_signalled
        from smtpconn.relay.shards import child_command, forget_shard_env, shard_role_from_env

        try:
            chosen_format = LogFormat(log_format)
        except ValueError:
            raise UsageError(
                f"--log-format {log_format!r} is not one of: key-value, json",
                fix="e.g. --log-format json",
            ) from None
        loaded = load_profile(settings.profile_path)
        overrides = RelayOverrides(
            inbound_listen=inbound_listen,
            inbound_tls_listen=inbound_tls_listen,
            submission_listen=submission_listen,
            tls_cert=tls_cert,
            tls_key=tls_key,
            spool=spool,
            hostname=hostname,
            max_message_size=max_message_size,
            retry_initial=retry_initial,
            retry_window=retry_window,
            max_connections_per_ip=max_connections_per_ip,
            processes=processes,
        )
        config = build_config(loaded.profile, loaded.base_dir, settings, overrides)
        if reload:
            _signal_reload(settings, config.spool_dir)
            return
        if check:
            problems = check_config(config)
            if settings.json:
                print_json(
                    {
                        "profile": str(settings.profile_path),
                        "ready": not problems,
                        "problems": problems,
                        "processes": config.processes,
                    }
                )
                if problems:
                    raise typer.Exit(2)
            elif not problems:
                console().print(
                    f"relay configuration OK: inbound {config.inbound_listen}, submission "
                    f"{config.submission_listen}, spool {config.spool_dir}, sink {config.sink.kind}, "
                    f"processes {config.processes}"
                )
            if problems:
                raise UsageError(
                    "the relay cannot start:\n  " + "\n  ".join(problems),
                    fix="correct the profile's [relay] table (docs/relay.md), then run --check again",
                )
            return
        configure_logging(settings.verbose, chosen_format)

        def load_again() -> RelayConfig:
            again = load_profile(settings.profile_path)
            return build_config(again.profile, again.base_dir, settings, overrides)

        # With [relay] processes > 1 the main starts its shard children as this same command
        # (SMTPCONN_SHARD tells a child what it is: smtpconn.relay.shards).
        role = shard_role_from_env(os.environ)
        forget_shard_env(os.environ)
        running = Relay(config, shard=role, shard_command=None if role else child_command())
        running.reload_source = load_again
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(run_shard(running) if role else run_until_signalled(running))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (SMTPCONN_EVENT_LOOP=asyncio keeps asyncio's)."""
    import os

    if os.environ.get("SMTPCONN_EVENT_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _signal_reload(settings: Settings, spool_dir: Path) -> None:
    from smtpconn.cli.render import console, print_json
    from smtpconn.relay.reload import signal_reload

    pid = signal_reload(spool_dir)
    if settings.json:
        print_json({"reloaded": True, "pid": pid, "spool": str(spool_dir)})
    else:
        console().print(
            f"Asked the relay (pid {pid}) on {spool_dir} to re-read the profile; its log says "
            "event=relay.reloaded, or relay.reload-refused with the reason."
        )
