"""Dovecot as the SASL server of the lab's OAuth submission port: XOAUTH2 and OAUTHBEARER only,
each token checked by Dovecot's built-in ``oauth2`` passdb against the lab authorization server's
introspection endpoint (RFC 7662, ``introspection_mode = post``) over HTTPS with the lab CA.

A token passes only while the issuer says it is active (unexpired, unrevoked, for the SMTP
audience with the SMTP scope or role) and issued to the very user name given in AUTH. The
issuer itself (lab/oauth.py) is started by each test on ``issuer_port``: when none runs, every
AUTH fails as it would with a provider that is down.
"""

from __future__ import annotations

from pathlib import Path

from lab.postfix import DovecotSasl


class DovecotOAuth(DovecotSasl):
    def __init__(self, directory: Path, port: int, issuer_port: int, ca_file: Path) -> None:
        super().__init__(directory, (), port)
        self.issuer_port = issuer_port
        self.ca_file = ca_file

    def write_config(self) -> None:
        d = self.directory
        for sub in ("run", "state"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        oauth2 = d / "dovecot-oauth2.conf.ext"
        # No secret in here (introspection needs none in the lab); the auth process (user
        # dovecot) must read it.
        oauth2.write_text(
            f"""introspection_mode = post
introspection_url = https://{self.host}:{self.issuer_port}/introspect
username_attribute = username
active_attribute = active
active_value = true
tls_ca_cert_file = {self.ca_file}
timeout_msecs = 5000
"""
        )
        oauth2.chmod(0o644)
        self.conf.write_text(
            f"""# smtpconn lab: Dovecot as OAuth2 SASL server for the lab's oauth_submission port.
base_dir = {d / "run"}
state_dir = {d / "state"}
instance_name = smtpconn-lab-oauth-{self.port}
protocols = none
listen = {self.host}
log_path = {self.log}
ssl = no
auth_mechanisms = xoauth2 oauthbearer
disable_plaintext_auth = no
auth_verbose = yes
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {oauth2}
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
service auth {{
  inet_listener sasl {{
    address = {self.host}
    port = {self.port}
  }}
}}
auth_failure_delay = 0
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""
        )
