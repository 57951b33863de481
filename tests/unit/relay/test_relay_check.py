"""``smtpconn relay --check`` on broken profiles: one clear line per problem, exit 2, nothing
created or changed."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from smtpconn.cli.app import app
from smtpconn.profile.secrets import hash_password

PROFILE = """\
version = 1
[[addresses]]
address = "support@example.com"
mode = "bidirectional"
[addresses.outbound]
host = "mail.example.com"
username = "relay"
secret = "env:SMTPCONN_UNIT_SECRET"
{dkim}
[addresses.inbound]
username = "customer"
password_hash = "{hash}"
[relay]
inbound_listen = "127.0.0.1:2525"
submission_listen = "127.0.0.1:2587"
{tls}
spool = "{spool}"
[relay.sink]
{sink}
"""


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.example.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    (folder / "relay.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "relay.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return folder / "relay.pem", folder / "relay.key"


def _check(
    tmp_path: Path,
    cert_pair: tuple[Path, Path],
    *,
    tls: str | None = None,
    spool: str = "spool",
    sink: str = 'kind = "maildir"\npath = "helpdesk"',
    dkim: str = "",
    json_output: bool = False,
) -> tuple[int, str]:
    cert, key = cert_pair
    if tls is None:
        tls = f'tls_cert = "{cert}"\ntls_key = "{key}"'
    text = PROFILE.format(hash=hash_password("pw"), tls=tls, spool=spool, sink=sink, dkim=dkim)
    profile = tmp_path / "smtpconn.toml"
    profile.write_text(text)
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["relay", "--check", "--profile", str(profile)] + (["--json"] if json_output else [])
    result = CliRunner().invoke(app, args, env={"SMTPCONN_UNIT_SECRET": "s"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # --check creates nothing
    return result.exit_code, result.output


def test_a_good_profile_is_ready(tmp_path: Path, cert_pair: tuple[Path, Path]) -> None:
    code, output = _check(tmp_path, cert_pair)
    assert code == 0, output
    assert "relay configuration OK" in output and str(tmp_path / "spool") in output


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no-cert", "bidirectional addresses need TLS"),
        ("cert-missing", "relay.tls_cert /nonexistent/relay.pem: cannot be read"),
        ("key-is-a-folder", "is a folder, not a PEM file"),
        ("key-is-garbage", "not a PEM certificate chain and its matching private key"),
        ("spool-under-a-file", "is not a folder"),
        ("spool-in-proc", "relay.spool /proc/smtpconn-spool: cannot write there"),
        ("maildir-in-proc", "relay.sink.path /proc/smtpconn-maildir: cannot write there"),
        ("webhook-scheme", "must start with https://"),
        ("webhook-no-host", "not a valid URL"),
        ("webhook-bad-port", "not a valid URL"),
        ("pipe-missing", "/nonexistent/rt-mailgate is not an executable file"),
        # A string is split into arguments: the program named first must exist.
        ("pipe-as-one-string", "rt-mailgate is not an executable file"),
        ("dkim-missing", "cannot read the DKIM private key"),
        ("dkim-garbage", "cannot DKIM-sign"),
    ],
)
def test_broken_profiles_are_refused_with_a_clear_line(
    tmp_path: Path, cert_pair: tuple[Path, Path], case: str, expected: str
) -> None:
    cert, key = cert_pair
    kwargs: dict[str, str] = {}
    if case == "no-cert":
        kwargs["tls"] = ""
    elif case == "cert-missing":
        kwargs["tls"] = f'tls_cert = "/nonexistent/relay.pem"\ntls_key = "{key}"'
    elif case == "key-is-a-folder":
        kwargs["tls"] = f'tls_cert = "{cert}"\ntls_key = "{cert.parent}"'
    elif case == "key-is-garbage":
        garbage = tmp_path / "garbage.key"
        garbage.write_text("-----BEGIN PRIVATE KEY-----\nnope\n")
        kwargs["tls"] = f'tls_cert = "{cert}"\ntls_key = "{garbage}"'
    elif case == "spool-under-a-file":
        (tmp_path / "afile").write_text("x")
        kwargs["spool"] = "afile/spool"
    elif case == "spool-in-proc":
        kwargs["spool"] = "/proc/smtpconn-spool"
    elif case == "maildir-in-proc":
        kwargs["sink"] = 'kind = "maildir"\npath = "/proc/smtpconn-maildir"'
    elif case == "webhook-scheme":
        kwargs["sink"] = 'kind = "webhook"\nurl = "htp:/helpdesk.example.com/mail"'
    elif case == "webhook-no-host":
        kwargs["sink"] = 'kind = "webhook"\nurl = "https:///mail"'
    elif case == "webhook-bad-port":
        kwargs["sink"] = 'kind = "webhook"\nurl = "https://helpdesk.example.com:99999/mail"'
    elif case == "pipe-missing":
        kwargs["sink"] = 'kind = "pipe"\ncommand = ["/nonexistent/rt-mailgate", "--queue", "x"]'
    elif case == "pipe-as-one-string":
        kwargs["sink"] = 'kind = "pipe"\ncommand = "rt-mailgate --queue general"'
    elif case in ("dkim-missing", "dkim-garbage"):
        if case == "dkim-garbage":
            (tmp_path / "dkim.pem").write_text("not a key\n")
        kwargs["dkim"] = '[addresses.dkim]\nselector = "s1"\nprivate_key = "dkim.pem"'
    code, output = _check(tmp_path, cert_pair, **kwargs)  # type: ignore[arg-type]
    assert code == 2, output
    assert expected in " ".join(output.split()), output
    assert output.startswith("error: the relay cannot start:")


def test_check_json_lists_every_problem(tmp_path: Path, cert_pair: tuple[Path, Path]) -> None:
    code, output = _check(
        tmp_path,
        cert_pair,
        spool="/proc/smtpconn-spool",
        sink='kind = "webhook"\nurl = "ftp://helpdesk.example.com/"',
        json_output=True,
    )
    assert code == 2
    report = json.loads(output)
    assert report["ready"] is False and len(report["problems"]) == 2


def test_a_valid_rsa_dkim_key_passes(tmp_path: Path, cert_pair: tuple[Path, Path]) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "dkim.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    code, output = _check(
        tmp_path, cert_pair, dkim='[addresses.dkim]\nselector = "s1"\nprivate_key = "dkim.pem"'
    )
    assert code == 0, output
