"""The connector profile: its model and TOML mapping (``model``, ``keys``), reading and writing
the file (``store``, ``preserve``), adding and removing addresses (``edit``, ``submission``),
secret references (``secrets``), file-system checks (``validate``) and the entries as the wire's
inputs (``wire``).

Modules are imported on use; ``__all__`` names the public ones.
"""

__all__ = [
    "edit",
    "keys",
    "model",
    "preserve",
    "secrets",
    "store",
    "submission",
    "validate",
    "wire",
]
