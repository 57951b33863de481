"""The ``smtpconn`` command (``app.main``): one module per command over the library.

Not a library surface: import the library packages instead. Modules are imported on use.
"""

__all__ = ["app"]
