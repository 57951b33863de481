"""The inbound policy for unauthenticated (forwarding-path) mail: one word, ``auth=pass|fail|none``,
out of the relay's own DMARC result (or a trusted ARC sealer's), and what the address's
``unauthenticated_policy`` does with it.

* ``pass``: DMARC passed here, or a trusted sealer's ARC-Authentication-Results say dmarc=pass
  and the ARC chain validates.
* ``fail``: DMARC failed (here, or by the trusted sealer's word).
* ``fail`` too: the message has no single author domain (no From, several From headers, or
  authors in several domains): DMARC cannot apply, and RFC 7489 §6.6.1 lets a receiver refuse it.
* ``none``: the author's domain publishes no DMARC policy: nothing to judge by, so no policy
  holds or rejects it; it is tagged ``auth=none``.
* A lookup that could not tell (``temperror``) is tagged ``auth=none`` but is not passed by a
  ``hold`` or ``reject`` policy: ``reject`` answers ``451 4.7.1`` (the sender retries) and
  ``hold`` holds it, so a sender cannot escape the policy by making its own DNS time out.
* A broken DMARC record (``permerror``) is permanent: retrying cannot help, so it is no usable
  policy, ``auth=none`` like no record at all (RFC 7489 §6.6.3 applies no policy then), not a
  ``451`` the sender would retry for days.

Authenticated mail (the customer's server, logged in) is never judged here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from smtpconn.profile.model import SupportAddress, UnauthenticatedPolicy
from smtpconn.relay.authres import AuthVerdicts


class Auth(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NONE = "none"


class Action(StrEnum):
    DELIVER = "deliver"
    HOLD = "hold"
    REJECT = "reject"
    DEFER = "defer"  # reject policy, DMARC could not be evaluated: 451, the sender retries


@dataclass(frozen=True, slots=True)
class Judgement:
    auth: Auth
    reason: str  # why, for the log, the held state and the 550 text (no client text raw)
    undecided: bool = False  # DMARC could not be evaluated this time (temperror)

    def action(self, policy: UnauthenticatedPolicy) -> Action:
        if policy is UnauthenticatedPolicy.TAG:
            return Action.DELIVER
        if self.auth is Auth.FAIL:
            return Action.REJECT if policy is UnauthenticatedPolicy.REJECT else Action.HOLD
        if self.undecided:
            return Action.DEFER if policy is UnauthenticatedPolicy.REJECT else Action.HOLD
        return Action.DELIVER


def judge(verdicts: AuthVerdicts, trusted_sealers: tuple[str, ...]) -> Judgement:
    """``auth=`` for an unauthenticated message to an address trusting ``trusted_sealers``."""
    if verdicts.author_problem is not None:
        # Nothing to apply DMARC to is not "no policy": RFC 7489 §6.6.1 lets a receiver refuse
        # it, and delivering it as auth=none would let a sender drop From to pass hold/reject.
        return Judgement(Auth.FAIL, f"no single author domain ({verdicts.author_problem})")
    arc = verdicts.arc
    if (
        arc is not None
        and arc.cv == "pass"
        and arc.sealer is not None
        and arc.sealer in trusted_sealers
        and arc.dmarc in (Auth.PASS, Auth.FAIL)
    ):
        return Judgement(Auth(arc.dmarc), f"ARC sealed by trusted {arc.sealer}: dmarc={arc.dmarc}")
    author = verdicts.from_domain or "no single From author"
    reason = f"DMARC {verdicts.dmarc} for {author}"
    if arc is not None:
        reason += f" (ARC {arc.cv}, sealer {arc.sealer or 'unknown'} not trusted)"
        if arc.cv != "pass" or arc.sealer in trusted_sealers:
            reason = f"DMARC {verdicts.dmarc} for {author} (ARC {arc.cv})"
    if verdicts.dmarc == "pass":
        return Judgement(Auth.PASS, reason)
    if verdicts.dmarc == "fail":
        return Judgement(Auth.FAIL, reason)
    return Judgement(Auth.NONE, reason, undecided=verdicts.dmarc == "temperror")


def policy_of(address: SupportAddress | None) -> tuple[UnauthenticatedPolicy, tuple[str, ...]]:
    if address is None:  # removed since it was spooled: today's behaviour
        return UnauthenticatedPolicy.TAG, ()
    return address.unauthenticated_policy, address.trusted_arc_sealers
