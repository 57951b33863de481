"""The relay: inbound and submission listeners (``server``, ``inbound``, ``outbound``), the
durable spool and its workers (``spool``, ``worker``, ``handover``, ``queue``), the sinks
(``sinks``), the headers it adds (``tagging``, ``authres``), and its configuration and runtime
(``config.build_config``, ``runtime.Relay``).

Modules are imported on use; ``__all__`` names the public ones.
"""

__all__ = [
    "authres",
    "config",
    "dsn",
    "folders",
    "handover",
    "inbound",
    "log",
    "outbound",
    "queue",
    "runtime",
    "server",
    "sessions",
    "sinks",
    "spool",
    "tagging",
    "wire",
    "worker",
]
