"""The relay runtime: both listeners, the spool workers, start and clean stop.

Library entry point (for ``smtpconn relay`` and for tests that need a running relay)::

    from smtpconn.relay.runtime import Relay, RelayOverrides

    relay = Relay.from_profile_file(
        Path("smtpconn.toml"),
        settings=Settings(resolvers=(("127.0.0.1", dns_port),), ca_file=lab_ca, timeout=5),
        overrides=RelayOverrides(
            inbound_listen="127.0.0.1:0",      # port 0: pick a free port
            submission_listen="127.0.0.1:0",
            spool=str(tmp_path / "spool"),
        ),
    )
    await relay.start()                 # listening and delivering when this returns
    relay.inbound_port, relay.submission_port   # the bound ports
    relay.inbound_tls_port                # implicit-TLS port, or None when not configured
    await relay.wait_idle(timeout=30)   # True once the spool is empty (all delivered/bounced)
    await relay.stop()                  # stop accepting, finish sessions in flight, stop workers

``Relay`` is also an async context manager (``async with Relay(...) as relay:``).
``Relay(config)`` takes a ready :class:`smtpconn.relay.config.RelayConfig`; ``Relay.from_profile_file``
loads the profile and applies the overrides (the same names as the ``[relay]`` keys and the
command-line flags).

As a subprocess: ``python -m smtpconn relay --profile P --inbound-listen 127.0.0.1:0
--submission-listen 127.0.0.1:0``; once listening it logs one line on stderr::

    event=relay.ready inbound=127.0.0.1:40123 submission=127.0.0.1:40124 inbound_tls=- spool=...

SIGTERM (or SIGINT) stops it cleanly: listeners close, sessions in flight finish (up to a grace
period), the workers finish the delivery at hand; nothing acknowledged is lost even on SIGKILL.
"""
