"""Message utilities every layer may use: the RFC 5322 header block (:mod:`.headers`), the
RFC 8601 authserv-id (:mod:`.authserv`), escaping of control characters (:mod:`.escaping`) and
our own tag header's grammar (:mod:`.tag`).

Bottom layer: imports nothing from the use cases (relay, sendtest, checks, cli) nor from smtp or
profile, so the relay that writes headers and ``send-test`` that reads them share one reader.
"""

from smtpconn.message.authserv import (
    AuthservHead,
    Unparsable,
    claims,
    normalise_id,
    parse_head,
    split_top_level,
)
from smtpconn.message.escaping import escape_controls, has_controls
from smtpconn.message.headers import header_value, split_header_block, strip_headers, unfold
from smtpconn.message.tag import AUTHENTICATED, TAG_HEADER, UNAUTHENTICATED, parse_tag, tag_value

__all__ = [
    "AUTHENTICATED",
    "TAG_HEADER",
    "UNAUTHENTICATED",
    "AuthservHead",
    "Unparsable",
    "claims",
    "escape_controls",
    "has_controls",
    "header_value",
    "normalise_id",
    "parse_head",
    "parse_tag",
    "split_header_block",
    "split_top_level",
    "strip_headers",
    "tag_value",
    "unfold",
]
