"""``send-test``'s use case: build a test message, send it outbound, inbound or round trip
through the wire (``smtpconn.smtp``), and report what each stage and the received copy show.

``run`` (the three directions and their report), ``testmessage`` (the message itself),
``received`` (reading the copy back from the relay's Maildir sink).
"""

__all__ = ["received", "run", "testmessage"]
