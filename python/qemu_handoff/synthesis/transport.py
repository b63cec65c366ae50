# SPDX-License-Identifier: GPL-2.0-or-later
"""How the synthesis service and its clients reach each other: mutual TLS
by default, plaintext only when asked for and only on loopback.

Credentials are laid out as QEMU's tls-creds-x509 reads them (one
directory: ca-cert.pem, server-cert.pem and server-key.pem for the
service, client-cert.pem and client-key.pem for a client, ca-crl.pem
optionally), so that a cloudlet keeps one kind of credential directory.
The service accepts a client only if the CA it trusts signed the client's
certificate (and the CRL, if any, does not revoke it); the handshake is
over before the service reads a byte of the request. A client's identity
is its certificate's subject common name: the VMs it launched and its
quota are counted under that name.
"""

import ipaddress
import os
import socket
import ssl

CA_CERT = "ca-cert.pem"
CRL = "ca-crl.pem"


class TransportError(Exception):
    """Credentials missing or unusable, or plaintext where it may not go."""


def _context(creds_dir, role):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if role == "server"
                         else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(os.path.join(creds_dir, f"{role}-cert.pem"),
                            os.path.join(creds_dir, f"{role}-key.pem"))
        ctx.load_verify_locations(os.path.join(creds_dir, CA_CERT))
        crl = os.path.join(creds_dir, CRL)
        if os.path.exists(crl):
            ctx.load_verify_locations(crl)
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    except (OSError, ssl.SSLError) as e:
        raise TransportError(f"TLS credentials in {creds_dir}: {e}")
    return ctx


def server_context(creds_dir):
    """The service's TLS context: its own certificate, and only clients
    whose certificate the CA in @creds_dir signed."""
    ctx = _context(creds_dir, "server")
    # No session tickets: a TLS 1.3 ticket arrives after the handshake,
    # and the client takes anything readable while it sends for the
    # service's early answer (a refusal). Nothing here resumes sessions.
    ctx.num_tickets = 0
    return ctx


def client_context(creds_dir):
    """A client's TLS context: its certificate, and only a service whose
    certificate the CA in @creds_dir signed for the name it is asked by."""
    ctx = _context(creds_dir, "client")
    ctx.check_hostname = True
    return ctx


def is_loopback(host):
    """Whether @host (an address or a name) is this machine's loopback
    only: a name counts if every address it resolves to is loopback."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback
        for info in infos)


def client_identity(sock):
    """The common name of a TLS peer's certificate, or None."""
    cert = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None
