"""``python -m lab up|down|status|env|relay`` (``scripts/lab`` wraps it): the lab for people.

``up`` starts the servers in the background (they outlive the command), writes the state dir
(``$SMTPCONN_LAB_DIR``, default ``./.lab``): ``state.json``, ``env`` (export lines to source) and
``run`` (a link to the servers' working directory), and prints the settings to use.
``down`` stops exactly the pids ``up`` recorded and removes the working directory.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from lab import zones
from lab.lab import Lab, LabState, _owned, make_lab_root, stop_state
from lab.proc import LabError, MissingBinaryError, port_open


def _state_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get("SMTPCONN_LAB_DIR") or ".lab").absolute()


def _running(st: LabState) -> dict[str, bool]:
    return {name: _owned(name, pid) for name, pid in st.pids.items()}


def _print_settings(st: LabState, state_dir: Path) -> None:
    p = st.ports
    print(f"""smtpconn lab is up ({st.root})

  DNS resolver     {st.resolver}      (authoritative for the lab zones: good.test, nospf.test, ...)
  CA file          {st.ca_file}
  mail server      {st.server_name} = {st.server_host}
    mx (25-style)  {p["mx"]}   STARTTLS offered, no AUTH
    submission     {p["submission"]}   STARTTLS required, AUTH after TLS
    smtps          {p["smtps"]}   implicit TLS + AUTH
    bad ports      no_starttls={p["no_starttls"]} auth_before_tls={p["auth_before_tls"]} \
expired={p["expired"]}
                   expiring={p["expiring"]} wrong_host={p["wrong_host"]} untrusted={p["untrusted"]}
  test user        {st.user} / {st.password}
  Maildirs         {st.maildir}
  DKIM key         {st.dkim_keys["main"]["path"]} (selector sel2048 on good.test)
  relay cert       {st.certs["relay"]["cert"]} / {st.certs["relay"]["key"]}

Use it:   source {state_dir / "env"}      (sets SMTPCONN_RESOLVER, SMTPCONN_CA_FILE, ...)
Try:      dig @{st.dns_host} -p {st.dns_port} +short TXT good.test
Relay:    scripts/lab relay {zones.RELAY_DOMAIN} 127.0.0.1:PORT USER PASSWORD
Stop:     scripts/lab down""")


def cmd_up(state_dir: Path) -> int:
    state_file = state_dir / "state.json"
    if state_file.exists():
        st = LabState.load(state_file)
        alive = _running(st)
        if alive and all(alive.values()):
            _print_settings(st, state_dir)
            print("\n(already running)")
            return 0
        # A stale or half-dead lab: stop what is left of it before starting afresh.
        cmd_down(state_dir, quiet=True)
    created_state_dir = not state_dir.exists()
    state_dir.mkdir(parents=True, exist_ok=True)
    root = make_lab_root()
    lab = Lab(root, state_file, stop_at_exit=False)
    t0 = time.monotonic()
    try:
        st = lab.start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    env_file = state_dir / "env"
    env_file.write_text(
        "# smtpconn lab settings: source this file\n"
        + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in st.env().items())
    )
    env_file.chmod(0o600)
    link = state_dir / "run"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(root)
    _hand_over(st, state_dir if created_state_dir else None, env_file)
    _print_settings(st, state_dir)
    print(f"\n(started in {time.monotonic() - t0:.1f}s)")
    return 0


def _hand_over(st: LabState, state_dir: Path | None, env_file: Path) -> None:
    """Started through sudo: give the user who ran sudo what they use the lab with.

    That is the env file (it must be sourced), the state dir if "up" made it (so it is theirs
    to remove), and the files its settings point smtpconn at: the DKIM keys
    (``add-address --dkim-key``) and the relay certificate and key (``smtpconn relay``). They
    stay 0600. state.json stays root's: "down" kills the pids it names.
    """
    uid, gid = os.environ.get("SUDO_UID", ""), os.environ.get("SUDO_GID", "")
    if os.geteuid() != 0 or not uid.isdigit() or not gid.isdigit() or int(uid) == 0:
        return
    paths = [
        env_file,
        *(Path(k["path"]) for k in st.dkim_keys.values()),
        Path(st.certs["relay"]["cert"]),
        Path(st.certs["relay"]["key"]),
    ]
    if state_dir is not None:
        paths.append(state_dir)
    for p in paths:
        os.chown(p, int(uid), int(gid))


def cmd_down(state_dir: Path, quiet: bool = False) -> int:
    state_file = state_dir / "state.json"
    if not state_file.exists():
        if not quiet:
            print(f"no lab state in {state_dir}: nothing to stop")
        return 0
    st = LabState.load(state_file)
    for line in stop_state(state_file):
        if not quiet:
            print(line)
    still = [
        p for p in [st.dns_port, st.sasl_port, *st.ports.values()] if port_open("127.0.0.1", p)
    ]
    if still:
        print(f"warning: ports still answering: {still}", file=sys.stderr)
    root = Path(st.root)
    if root.name.startswith("smtpconn-lab-"):
        shutil.rmtree(root, ignore_errors=True)
    for name in ("state.json", "env", "run"):
        p = state_dir / name
        if p.is_symlink() or p.exists():
            p.unlink()
    if not quiet:
        print("smtpconn lab is down")
    return 0


def cmd_status(state_dir: Path) -> int:
    state_file = state_dir / "state.json"
    if not state_file.exists():
        print("smtpconn lab is down (no state)")
        return 1
    st = LabState.load(state_file)
    alive = _running(st)
    for name, pid in st.pids.items():
        print(f"{name:8} pid {pid:<8} {'running' if alive[name] else 'NOT running'}")
    for name, port in [("dns", st.dns_port), *st.ports.items()]:
        print(
            f"  {name:16} 127.0.0.1:{port:<6} {'open' if port_open('127.0.0.1', port) else 'closed'}"
        )
    up = bool(alive) and all(alive.values())
    print(f"smtpconn lab is {'up' if up else 'DOWN or broken (run: scripts/lab down; up)'}")
    return 0 if up else 1


def cmd_env(state_dir: Path) -> int:
    state_file = state_dir / "state.json"
    if not state_file.exists():
        print("# smtpconn lab is down", file=sys.stderr)
        return 1
    for k, v in LabState.load(state_file).env().items():
        print(f"export {k}={shlex.quote(v)}")
    return 0


def cmd_relay(state_dir: Path, domain: str, target: str, user: str, password: str, tls: str) -> int:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        print("target must be HOST:PORT", file=sys.stderr)
        return 2
    lab = Lab.attach(state_dir / "state.json")
    t = lab.set_relay_target(domain, host, int(port), user, password, tls=tls)
    print(f"Postfix now relays mail for {t.domain} to {t.nexthop} (TLS {t.tls}, AUTH as {user})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="scripts/lab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--dir", help="state dir (default $SMTPCONN_LAB_DIR or ./.lab)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="start the lab servers in the background")
    sub.add_parser("down", help="stop them")
    sub.add_parser("status", help="show what runs (exit 1 if not up)")
    sub.add_parser("env", help="print export lines for the lab settings")
    rp = sub.add_parser("relay", help="make Postfix relay a domain to HOST:PORT with TLS+AUTH")
    rp.add_argument("domain")
    rp.add_argument("target", metavar="HOST:PORT")
    rp.add_argument("user")
    rp.add_argument(
        "password",
        nargs="?",
        default=os.environ.get("SMTPCONN_LAB_RELAY_PASSWORD"),
        help="(or env SMTPCONN_LAB_RELAY_PASSWORD)",
    )
    rp.add_argument(
        "--tls",
        choices=["encrypt", "secure"],
        default="encrypt",
        help="secure = also verify the cert against the lab CA",
    )
    args = ap.parse_args(argv)
    state_dir = _state_dir(args.dir)
    try:
        if args.cmd == "up":
            return cmd_up(state_dir)
        if args.cmd == "down":
            return cmd_down(state_dir)
        if args.cmd == "status":
            return cmd_status(state_dir)
        if args.cmd == "env":
            return cmd_env(state_dir)
        if args.password is None:
            ap.error("relay needs a password (argument or SMTPCONN_LAB_RELAY_PASSWORD)")
        return cmd_relay(state_dir, args.domain, args.target, args.user, args.password, args.tls)
    except MissingBinaryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
