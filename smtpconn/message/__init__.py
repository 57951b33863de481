"""Message utilities every layer may use: the RFC 5322 header block (:mod:`.headers`), the
RFC 8601 authserv-id (:mod:`.authserv`) and escaping of control characters (:mod:`.escaping`).

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

__all__ = [
    "AuthservHead",
    "Unparsable",
    "claims",
    "escape_controls",
    "has_controls",
    "header_value",
    "normalise_id",
    "parse_head",
    "split_header_block",
    "split_top_level",
    "strip_headers",
    "unfold",
]
