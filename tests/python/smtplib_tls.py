"""Python's smtplib over TLS: STARTTLS on the mx listener, implicit TLS with AUTH on the
submissions listener, and AUTH refused before STARTTLS on the submission listener.

Usage: smtplib_tls.py MX_PORT SUBMISSION_PORT SUBMISSIONS_PORT ROOT_CA_PEM.
Prints 'smtplib-tls: all checks passed' and exits 0 on success.
"""
import smtplib
import ssl
import sys

mx, submission, submissions, cafile = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
host = "mx.example.test"  # the certificate's name; we connect to 127.0.0.1


def connect_plain(port):
    s = smtplib.SMTP(timeout=20, local_hostname="python.test")
    s._host = host  # smtplib checks the certificate against this name
    s.connect("127.0.0.1", port)
    return s


# STARTTLS on the mx listener, then a message to a local user.
with connect_plain(mx) as s:
    s.ehlo()
    assert s.has_extn("starttls")
    assert not s.has_extn("auth"), "port 25 offers no AUTH"
    code, _ = s.starttls(context=ctx)
    assert code == 220, code
    s.ehlo()
    assert not s.has_extn("starttls")
    assert s.sock.version() in ("TLSv1.2", "TLSv1.3"), s.sock.version()
    refused = s.sendmail("py@remote.test", ["bob@example.test"], b"Subject: smtplib starttls\r\n\r\nhi\r\n")
    assert refused == {}, refused

# The submission listener refuses AUTH in clear text.
with connect_plain(submission) as s:
    s.ehlo()
    assert not s.has_extn("auth")
    code, text = s.docmd("AUTH", "PLAIN AGFsaWNlAGFsaWNlLXNlY3JldA==")
    assert code == 530 and text.startswith(b"5.7.0"), (code, text)

# Implicit TLS on submissions: a wrong password, then the right one, then relay.
s = smtplib.SMTP_SSL(timeout=20, local_hostname="python.test", context=ctx)
s._host = host
s.connect("127.0.0.1", submissions)
with s:
    s.ehlo()
    assert "PLAIN" in s.esmtp_features.get("auth", ""), s.esmtp_features
    try:
        s.login("alice", "not her password")
        raise AssertionError("bad password accepted")
    except smtplib.SMTPAuthenticationError as e:
        assert e.smtp_code == 535 and e.smtp_error.startswith(b"5.7.8"), e
    code, _ = s.login("alice", "alice-secret")
    assert code == 235, code
    try:
        s.sendmail("bob@example.test", ["x@far.test"], b"Subject: forged\r\n\r\nx\r\n")
        raise AssertionError("forged sender accepted")
    except smtplib.SMTPSenderRefused as e:
        assert e.smtp_code == 553 and e.smtp_error.startswith(b"5.7.1"), e
    msg = b"From: alice@example.test\r\nTo: x@far.test\r\nSubject: smtplib submissions\r\n\r\nrelayed\r\n"
    refused = s.sendmail("alice@example.test", ["x@far.test"], msg)
    assert refused == {}, refused

print("smtplib-tls: all checks passed")
