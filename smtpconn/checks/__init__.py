"""``verify``: the check families (``dns_checks``, ``spf``, ``dkim_checks``, ``dmarc``,
``mta_sts``, ``tls_auth``), their catalogue, the runner, the report and the library entry point
(``verify.verify_profile`` / ``verify.verify_entries``).

Modules are imported on use; ``__all__`` names the public ones.
"""

__all__ = [
    "catalogue",
    "common",
    "dkim_checks",
    "dmarc",
    "dns_checks",
    "model",
    "mta_sts",
    "records",
    "report",
    "runner",
    "spf",
    "spf_limits",
    "spf_syntax",
    "tls_auth",
    "verify",
]
