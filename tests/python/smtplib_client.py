"""Drives Postern with Python's smtplib: a fan-out message, refusals, VRFY/EXPN, RSET.

Usage: smtplib_client.py PORT. Prints 'smtplib: all checks passed' and exits 0 on success.
"""
import smtplib
import sys

port = int(sys.argv[1])
rcpts = [
    "dave@example.test",
    "team@example.test",
    "sales@example.test",
    "whoever@catch.test",
    "erin+newsletters@example.test",
]
msg = b"From: py@remote.test\r\nTo: team@example.test\r\nSubject: from smtplib\r\n\r\nHello from Python.\r\n"

with smtplib.SMTP("127.0.0.1", port, local_hostname="python.test", timeout=20) as s:
    code, _ = s.ehlo()
    assert code == 250, code
    for ext in ("pipelining", "size", "8bitmime", "enhancedstatuscodes", "smtputf8", "chunking"):
        assert s.has_extn(ext), ext
    assert not s.has_extn("vrfy")
    refused = s.sendmail("py@remote.test", rcpts, msg)
    assert refused == {}, refused

    # One bad recipient among good ones: smtplib reports it, the rest is delivered.
    try:
        s.sendmail("py@remote.test", ["nobody@example.test"], msg)
        raise AssertionError("unknown user accepted")
    except smtplib.SMTPRecipientsRefused as e:
        code, text = e.recipients["nobody@example.test"]
        assert code == 550 and text.startswith(b"5.1.1"), (code, text)

    try:
        s.sendmail("py@remote.test", ["x@elsewhere.test"], msg)
        raise AssertionError("relay accepted")
    except smtplib.SMTPRecipientsRefused as e:
        code, text = e.recipients["x@elsewhere.test"]
        assert code == 550 and text.startswith(b"5.7.1"), (code, text)

    code, text = s.verify("bob")
    assert code == 252 and text.startswith(b"2.5.2"), (code, text)
    code, text = s.expn("team")
    assert code == 502, (code, text)
    code, _ = s.rset()
    assert code == 250
    code, _ = s.noop()
    assert code == 250

print("smtplib: all checks passed")
