# SPDX-License-Identifier: GPL-2.0-or-later
"""Handoff between cloudlets over TLS (tls-creds-x509 with peer
verification): the VM moves identically, and the wrong peers are refused
with a named error while the source runs on."""

import pytest

from qemu_handoff.bases import (create_base, run_workload, start_destination,
                                start_from_base, wait_heartbeat_after)
from qemu_handoff.identity import assert_same_vm
from qemu_handoff.tls import (CertificateAuthority, certificate_subject,
                              tls_object)

DST_NAME = "dst.cloudlet.test"


@pytest.fixture(scope="module")
def base(module_tmp):
    work = module_tmp
    return create_base(str(work), str(work / "base"))


@pytest.fixture
def pki(tmp_path):
    ca = CertificateAuthority(str(tmp_path), "cloudlet-ca")
    return {
        "ca": ca,
        "server": ca.credentials(str(tmp_path), "server", "server",
                                 DST_NAME),
        "client": ca.credentials(str(tmp_path), "client", "client",
                                 "src.cloudlet.test"),
    }


def tls_destination(tmp_path, base, creds):
    dst = start_destination("dst", str(tmp_path), base,
                            extra_args=tls_object(creds, "server"))
    dst.qmp.cmd("migrate-set-parameters", tls_creds="tls0")
    return dst


def tls_source(tmp_path, base, creds, hostname=DST_NAME):
    src = start_from_base("src", str(tmp_path), base,
                          extra_args=tls_object(creds, "client"))
    src.qmp.cmd("migrate-set-parameters", tls_creds="tls0",
                tls_hostname=hostname)
    return src


def test_handoff_over_tls(tmp_path, base, pki, vms):
    src = tls_source(tmp_path, base, pki["client"])
    vms.append(src)
    run_workload(src, "mixed")
    dst = tls_destination(tmp_path, base, pki["server"])
    vms.append(dst)
    src.qmp.cmd("migrate-handoff", uri=f"tcp:127.0.0.1:{dst.port}")
    info = src.wait_migration()
    assert info["status"] == "completed", info.get("error-desc")
    # The controller saw the link through the TLS channel's socket.
    assert info["handoff"]["output-bytes"] > 0
    assert_same_vm(src, dst)


def refused(src, dst, cause):
    src.qmp.cmd("migrate-handoff", uri=f"tcp:127.0.0.1:{dst.port}")
    info = src.wait_migration()
    assert info["status"] == "failed", info
    if cause:
        assert cause in info.get("error-desc", ""), info
    assert src.status() == "running"
    wait_heartbeat_after(src, 2)
    return info


def test_plaintext_source_is_refused(tmp_path, base, pki, vms):
    src = start_from_base("src", str(tmp_path), base)
    vms.append(src)
    dst = tls_destination(tmp_path, base, pki["server"])
    vms.append(dst)
    refused(src, dst, None)
    dst_log = dst.read_log()
    assert "TLS" in dst_log or "tls" in dst_log, dst_log


def test_certificate_from_another_ca_is_refused(tmp_path, base, pki, vms):
    """The destination's certificate comes from a CA the source does not
    trust."""
    other = CertificateAuthority(str(tmp_path), "rogue-ca")
    rogue_server = other.credentials(str(tmp_path), "rogue-server", "server",
                                     DST_NAME)
    src = tls_source(tmp_path, base, pki["client"])
    vms.append(src)
    dst = tls_destination(tmp_path, base, rogue_server)
    vms.append(dst)
    refused(src, dst, "hasn't got a known issuer")


def test_client_certificate_from_another_ca_is_refused(tmp_path, base, pki,
                                                       vms):
    """verify-peer: the destination refuses a source whose certificate
    its CA did not sign."""
    other = CertificateAuthority(str(tmp_path), "rogue-ca")
    rogue_client = other.credentials(str(tmp_path), "rogue-client", "client",
                                     "src.cloudlet.test",
                                     also_trust=[pki["ca"]])
    src = tls_source(tmp_path, base, rogue_client)
    vms.append(src)
    dst = tls_destination(tmp_path, base, pki["server"])
    vms.append(dst)
    refused(src, dst, None)
    # GnuTLS's client offers no certificate the server's CA list does not
    # name: the destination refuses a peer without a valid one.
    assert "Verify failed" in dst.read_log(), dst.read_log()


def test_wrong_hostname_is_refused(tmp_path, base, pki, vms):
    src = tls_source(tmp_path, base, pki["client"],
                     hostname="elsewhere.cloudlet.test")
    vms.append(src)
    dst = tls_destination(tmp_path, base, pki["server"])
    vms.append(dst)
    refused(src, dst, "elsewhere.cloudlet.test")


@pytest.mark.parametrize("allowed", [True, False])
def test_tls_authz_checks_the_source_identity(tmp_path, base, pki, vms,
                                              allowed):
    """tls-authz: the destination accepts only the source certificate
    whose distinguished name its authz object lists."""
    subject = certificate_subject(pki["client"], "client")
    src = tls_source(tmp_path, base, pki["client"])
    vms.append(src)
    dst = tls_destination(tmp_path, base, pki["server"])
    vms.append(dst)
    identity = subject if allowed else subject.replace("src.", "other.")
    dst.qmp.cmd("object-add", qom_type="authz-simple", id="auth0",
                identity=identity)
    dst.qmp.cmd("migrate-set-parameters", tls_authz="auth0")
    if allowed:
        # assert_same_vm compares the source's last heartbeat with the
        # destination's first: the source must have printed one.
        wait_heartbeat_after(src, 1)
        src.qmp.cmd("migrate-handoff", uri=f"tcp:127.0.0.1:{dst.port}")
        info = src.wait_migration()
        assert info["status"] == "completed", info.get("error-desc")
        assert_same_vm(src, dst)
    else:
        refused(src, dst, None)
        assert "denied" in dst.read_log(), dst.read_log()
