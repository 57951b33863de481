"""DKIM keys for the lab zones, generated at lab start into the lab's directory.

Sizes come from ``lab.zones.DKIM_KEY_BITS``. The private halves are written as PKCS#8 PEM files
(mode 0600) whose paths the tests use to sign; the public halves go into the zone files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lab import zones
from lab.proc import run, which


@dataclass(frozen=True)
class DkimKey:
    name: str
    bits: int
    #: PEM file of the private key (PKCS#8, unencrypted).
    path: Path
    #: DER SubjectPublicKeyInfo of the public half (what the ``p=`` tag encodes).
    public_der: bytes

    @property
    def private_pem(self) -> bytes:
        return self.path.read_bytes()


def _generate_pem(bits: int, path: Path) -> None:
    if bits >= 1024:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.write_bytes(pem)
    else:
        # cryptography refuses to *generate* keys under 1024 bits (it still loads them), so the
        # deliberately weak key comes from openssl.
        run(
            [
                which("openssl"),
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                f"rsa_keygen_bits:{bits}",
                "-out",
                str(path),
            ],
            f"openssl genpkey {bits}",
        )
    path.chmod(0o600)


def load_public_der(path: Path) -> bytes:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def generate_dkim_keys(directory: Path) -> dict[str, DkimKey]:
    """Create (or reuse, if already there) one key per entry of ``zones.DKIM_KEY_BITS``."""
    directory.mkdir(parents=True, exist_ok=True)
    keys: dict[str, DkimKey] = {}
    for name, bits in zones.DKIM_KEY_BITS.items():
        path = directory / f"dkim-{name}.pem"
        if not path.exists():
            _generate_pem(bits, path)
        keys[name] = DkimKey(name, bits, path, load_public_der(path))
    return keys
