# SPDX-License-Identifier: GPL-2.0-or-later
"""Certificates for handoff over TLS: a CA per test, and the directories
QEMU's tls-creds-x509 reads (ca-cert.pem, server-cert.pem/-key.pem,
client-cert.pem/-key.pem), made with GnuTLS's certtool."""

import os
import subprocess


def _certtool(*args, template=None, cwd):
    cmd = ["certtool", *args]
    if template is not None:
        path = os.path.join(cwd, "template.info")
        with open(path, "w") as f:
            f.write(template)
        cmd += ["--template", path]
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)


class CertificateAuthority:
    def __init__(self, workdir, name):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir)
        self.name = name
        _certtool("--generate-privkey", "--outfile", "ca-key.pem",
                  cwd=self.dir)
        _certtool("--generate-self-signed", "--load-privkey", "ca-key.pem",
                  "--outfile", "ca-cert.pem", cwd=self.dir,
                  template=f"cn = {name}\nca\ncert_signing_key\n"
                           "expiration_days = 7\n")

    def _issue(self, out_dir, role, cn, extra, validity):
        key, cert = f"{role}-key.pem", f"{role}-cert.pem"
        _certtool("--generate-privkey", "--outfile", key, cwd=out_dir)
        _certtool("--generate-certificate", "--load-privkey", key,
                  "--load-ca-certificate",
                  os.path.join(self.dir, "ca-cert.pem"),
                  "--load-ca-privkey", os.path.join(self.dir, "ca-key.pem"),
                  "--outfile", cert, cwd=out_dir,
                  template=f"organization = qemu-handoff tests\ncn = {cn}\n"
                           f"{extra}encryption_key\nsigning_key\n"
                           f"{validity}")

    def revoke(self, creds_dir, cert_path):
        """Writes this CA's revocation list, revoking the certificate at
        @cert_path, into @creds_dir as ca-crl.pem (where a service that
        reads a tls-creds-x509 directory looks for it)."""
        _certtool("--generate-crl", "--load-ca-privkey",
                  os.path.join(self.dir, "ca-key.pem"),
                  "--load-ca-certificate",
                  os.path.join(self.dir, "ca-cert.pem"),
                  "--load-certificate", cert_path,
                  "--outfile", os.path.join(creds_dir, "ca-crl.pem"),
                  cwd=self.dir, template="crl_next_update = 7\n"
                                         "crl_number = 1\n")

    def credentials(self, workdir, name, endpoint, cn, also_trust=(),
                    expired=False):
        """A tls-creds-x509 directory for @endpoint ("server", "client",
        or "both" as a libvirt host's migrate_tls_x509_cert_dir holds)
        with a certificate for @cn from this CA, trusting this CA and the
        CAs in @also_trust (QEMU checks its own certificate too, so its
        issuer must be among them); @expired: one valid only in 2020."""
        validity = ('activation_date = "2020-01-01 00:00:00"\n'
                    'expiration_date = "2020-02-01 00:00:00"\n'
                    if expired else "expiration_days = 7\n")
        out = os.path.join(workdir, name)
        os.makedirs(out)
        with open(os.path.join(out, "ca-cert.pem"), "w") as out_f:
            for ca in (self, *also_trust):
                with open(os.path.join(ca.dir, "ca-cert.pem")) as f:
                    out_f.write(f.read())
        if endpoint in ("server", "both"):
            self._issue(out, "server", cn, f"dns_name = {cn}\n"
                        "ip_address = 127.0.0.1\ntls_www_server\n", validity)
        if endpoint in ("client", "both"):
            self._issue(out, "client", cn, "tls_www_client\n", validity)
        return out


def tls_object(creds_dir, endpoint, obj_id="tls0"):
    """The -object argument QEMU needs for @creds_dir."""
    verify = ",verify-peer=on" if endpoint == "server" else ""
    return ["-object", f"tls-creds-x509,id={obj_id},dir={creds_dir},"
                       f"endpoint={endpoint}{verify}"]


def certificate_subject(creds_dir, role):
    """The distinguished name of @role's certificate as QEMU's tls-authz
    compares it: gnutls_x509_crt_get_dn's order ("O=...,CN=..."), the
    reverse of certtool's RFC 4514 display (names here hold no comma)."""
    out = subprocess.run(["certtool", "-i", "--infile",
                          os.path.join(creds_dir, f"{role}-cert.pem")],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Subject:"):
            rdns = line[len("Subject:"):].strip().split(",")
            return ",".join(reversed(rdns))
    raise ValueError(f"no subject in {creds_dir}/{role}-cert.pem")
