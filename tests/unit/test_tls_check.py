"""tls_check against real TLS servers on 127.0.0.1, with certificates made for each test."""

from __future__ import annotations

import datetime
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from modules_harness import run_module
from servers import LocalServer, make_ca

CHECK_NAMES = ["reachable", "chain", "hostname", "days_left", "not_yet_valid"]


def port_of(server: LocalServer) -> int:
    return int(server.httpd.server_address[1])


def by_name(result: dict) -> dict[str, dict]:
    return {c["name"]: c for c in result["checks"]}


def self_signed(directory: Path, names: list[str], starts_in_days: float, valid_days: float) -> dict[str, Path]:
    """A self-signed certificate for DNS names, valid from now + starts_in_days for valid_days."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    start = now + datetime.timedelta(days=starts_in_days)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=valid_days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"cert": directory / "cert.pem", "key": directory / "key.pem"}
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    return make_ca(tmp_path / "pki", hostname="localhost", days=90)


@pytest.fixture
def server(pki: dict[str, Path]) -> Iterator[LocalServer]:
    srv = LocalServer(tls=(pki["cert"], pki["key"]))
    yield srv
    srv.close()


def test_a_valid_certificate_with_its_ca_passes_every_check(server: LocalServer, pki: dict[str, Path]) -> None:
    res = run_module("tls_check", {"host": "127.0.0.1", "port": port_of(server), "ca_path": str(pki["ca"])})
    assert not res.get("failed"), res
    assert res["changed"] is False
    assert [c["name"] for c in res["checks"]] == CHECK_NAMES
    assert all(c["status"] == "pass" and c["reason"] is None for c in res["checks"]), res["checks"]
    assert res["summary"] == {"total": 5, "passed": 5, "failed": 0, "warned": 0}
    assert "failed" not in res

    # the facts are those of the certificate the server really holds
    cert = x509.load_pem_x509_certificate(pki["cert"].read_bytes())
    assert res["subject"] == "CN=localhost"
    assert res["issuer"] == "CN=erni-deploy test CA"
    assert res["san"] == ["localhost", "127.0.0.1"]
    assert res["serial"] == format(cert.serial_number, "x")
    assert res["fingerprint_sha256"].replace(":", "").lower() == cert.fingerprint(hashes.SHA256()).hex()
    assert res["not_after"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert res["not_before"] == cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert 89.9 <= res["days_left"] <= 90.0
    checks = by_name(res)
    assert checks["days_left"]["value"] == res["days_left"] and checks["days_left"]["limit"] == 30
    assert checks["hostname"]["value"] == "127.0.0.1"
    assert 0 <= checks["reachable"]["value"] < 5 and checks["reachable"]["limit"] == 5


def test_the_dns_name_is_checked_when_server_name_is_given(server: LocalServer, pki: dict[str, Path]) -> None:
    res = run_module("tls_check", {"host": "127.0.0.1", "port": port_of(server), "server_name": "localhost",
                                   "ca_path": str(pki["ca"])})
    assert res["summary"]["passed"] == 5, res
    assert by_name(res)["hostname"] == {"name": "hostname", "status": "pass", "value": "localhost",
                                        "limit": ["localhost", "127.0.0.1"], "reason": None}


def test_a_certificate_expiring_in_five_days_fails_days_left(tmp_path: Path) -> None:
    pki = make_ca(tmp_path, days=5)
    srv = LocalServer(tls=(pki["cert"], pki["key"]))
    try:
        args = {"host": "127.0.0.1", "port": port_of(srv), "ca_path": str(pki["ca"]), "min_days_left": 30}
        res = run_module("tls_check", args)
        assert res["failed"] is True
        days = by_name(res)["days_left"]
        assert days["status"] == "fail"
        assert 4.9 <= days["value"] <= 5.0 and days["limit"] == 30
        assert "expires in" in days["reason"] and "30 days" in days["reason"]
        assert [c["name"] for c in res["checks"] if c["status"] == "fail"] == ["days_left"]
        assert res["msg"].startswith("1 of 5 TLS checks failed") and "days_left:" in res["msg"]

        # the same, reported without failing the task
        report = run_module("tls_check", {**args, "fail_on_error": False})
        assert "failed" not in report
        assert report["summary"] == {"total": 5, "passed": 4, "failed": 1, "warned": 0}

        # a lower limit is met
        assert run_module("tls_check", {**args, "min_days_left": 4})["summary"]["passed"] == 5
    finally:
        srv.close()


def test_a_wrong_server_name_fails_hostname(server: LocalServer, pki: dict[str, Path]) -> None:
    res = run_module("tls_check", {"host": "127.0.0.1", "port": port_of(server), "ca_path": str(pki["ca"]),
                                   "server_name": "ki.erni-gruppe.ch"})
    assert res["failed"] is True
    checks = by_name(res)
    assert checks["hostname"]["status"] == "fail"
    assert checks["hostname"]["reason"] == ("name ki.erni-gruppe.ch is not among the certificate's names: "
                                            "localhost, 127.0.0.1")
    assert checks["chain"]["status"] == "pass"  # the chain does not depend on the name asked for
    assert res["summary"]["failed"] == 1


def test_a_wrong_ip_address_fails_hostname(server: LocalServer, pki: dict[str, Path]) -> None:
    res = run_module("tls_check", {"host": "127.0.0.1", "port": port_of(server), "ca_path": str(pki["ca"]),
                                   "server_name": "127.0.0.2", "fail_on_error": False})
    assert by_name(res)["hostname"]["reason"].startswith("IP address 127.0.0.2 is not among")


def test_a_ca_file_of_another_ca_fails_chain(server: LocalServer, tmp_path: Path) -> None:
    other = make_ca(tmp_path / "other", ca_name="some other CA")
    res = run_module("tls_check", {"host": "127.0.0.1", "port": port_of(server), "ca_path": str(other["ca"])})
    assert res["failed"] is True
    chain = by_name(res)["chain"]
    assert chain["status"] == "fail"
    assert chain["limit"] == f"CA file {other['ca']}"
    assert "does not verify" in chain["reason"] and "unable to get local issuer certificate" in chain["reason"]
    # the certificate is still described, and the other checks still pass
    assert res["subject"] == "CN=localhost"
    assert [c["name"] for c in res["checks"] if c["status"] == "fail"] == ["chain"]


def test_without_ca_path_the_system_store_does_not_trust_a_private_ca(server: LocalServer) -> None:
    res = run_module("tls_check", {"host": "127.0.0.1", "port": port_of(server), "fail_on_error": False})
    chain = by_name(res)["chain"]
    assert chain["status"] == "fail" and chain["limit"] == "system trust store"


def test_a_closed_port_fails_reachable_with_the_address(tmp_path: Path) -> None:
    closed = LocalServer()
    port = port_of(closed)
    closed.close()
    res = run_module("tls_check", {"host": "127.0.0.1", "port": port})
    assert res["failed"] is True
    assert res["checks"] == [{"name": "reachable", "status": "fail", "value": None, "limit": 5.0,
                              "reason": f"connection refused by 127.0.0.1:{port}"}]
    assert res["subject"] is None and res["days_left"] is None
    assert res["msg"] == (f"1 of 1 TLS checks failed for 127.0.0.1:{port}: "
                          f"reachable: connection refused by 127.0.0.1:{port}")


def test_a_plain_http_port_fails_reachable_with_a_tls_reason() -> None:
    plain = LocalServer()
    try:
        res = run_module("tls_check", {"host": "127.0.0.1", "port": port_of(plain), "fail_on_error": False})
        assert [c["name"] for c in res["checks"]] == ["reachable"]
        assert res["checks"][0]["reason"].startswith(f"TLS handshake with 127.0.0.1:{port_of(plain)} failed")
    finally:
        plain.close()


def test_a_server_that_never_answers_times_out() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        port = sock.getsockname()[1]
        res = run_module("tls_check", {"host": "127.0.0.1", "port": port, "timeout": 0.5, "fail_on_error": False})
        assert res["checks"][0]["status"] == "fail"
        assert res["checks"][0]["reason"] == f"no TLS handshake with 127.0.0.1:{port} within 0.5 s"
    finally:
        sock.close()


def test_a_certificate_not_valid_yet_and_an_expired_one(tmp_path: Path) -> None:
    future = self_signed(tmp_path / "future", ["future.erni.test"], starts_in_days=2, valid_days=365)
    expired = self_signed(tmp_path / "expired", ["old.erni.test"], starts_in_days=-40, valid_days=30)
    srv_future = LocalServer(tls=(future["cert"], future["key"]))
    srv_expired = LocalServer(tls=(expired["cert"], expired["key"]))
    try:
        res = run_module("tls_check", {"host": "127.0.0.1", "port": port_of(srv_future),
                                       "server_name": "future.erni.test", "ca_path": str(future["cert"]),
                                       "fail_on_error": False})
        checks = by_name(res)
        assert checks["not_yet_valid"]["status"] == "fail"
        assert checks["not_yet_valid"]["value"] == res["not_before"]
        assert "not valid before" in checks["not_yet_valid"]["reason"]
        assert checks["hostname"]["status"] == "pass"

        res = run_module("tls_check", {"host": "127.0.0.1", "port": port_of(srv_expired),
                                       "server_name": "old.erni.test", "ca_path": str(expired["cert"])})
        checks = by_name(res)
        assert res["failed"] is True
        assert -10.1 <= checks["days_left"]["value"] <= -9.9
        assert checks["days_left"]["reason"].startswith("the certificate expired 10 days ago")
        assert checks["not_yet_valid"]["status"] == "pass"
        assert "expired" in checks["chain"]["reason"]  # every client refuses it too
    finally:
        srv_future.close()
        srv_expired.close()


@pytest.mark.parametrize("server_name, ok", [
    ("api.erni.test", True),
    ("API.Erni.Test", True),
    ("erni.test", False),       # the wildcard needs a label
    ("a.b.erni.test", False),   # and stands for one label only
    ("api.erni.test.evil", False),
])
def test_wildcard_names_match_one_label(tmp_path: Path, server_name: str, ok: bool) -> None:
    paths = self_signed(tmp_path, ["*.erni.test"], starts_in_days=-1, valid_days=90)
    srv = LocalServer(tls=(paths["cert"], paths["key"]))
    try:
        res = run_module("tls_check", {"host": "127.0.0.1", "port": port_of(srv), "server_name": server_name,
                                       "fail_on_error": False})
        assert by_name(res)["hostname"]["status"] == ("pass" if ok else "fail")
        assert res["san"] == ["*.erni.test"]
    finally:
        srv.close()


@pytest.mark.parametrize("args, message", [
    ({"port": 0}, "port=0 must be between 1 and 65535"),
    ({"port": 70000}, "port=70000 must be between 1 and 65535"),
    ({"min_days_left": -1}, "min_days_left=-1.0 must be"),
    ({"timeout": 0}, "timeout=0.0 must be"),
    ({"host": " "}, "host is empty"),
    ({"ca_path": "/nonexistent/ca.crt"}, "ca_path /nonexistent/ca.crt is not a file"),
])
def test_bad_input_is_refused_with_a_message_naming_it(args: dict, message: str) -> None:
    res = run_module("tls_check", {"host": "127.0.0.1", "port": 443, **args})
    assert res["failed"] is True
    assert message in res["msg"], res["msg"]
    assert "checks" not in res  # refused before connecting anywhere


def test_a_ca_file_that_is_not_pem_is_refused(tmp_path: Path, server: LocalServer) -> None:
    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate\n")
    res = run_module("tls_check", {"host": "127.0.0.1", "port": port_of(server), "ca_path": str(bad)})
    assert res["failed"] is True
    assert res["msg"].startswith(f"ca_path {bad} holds no usable CA certificate")


def test_runs_in_check_mode(server: LocalServer, pki: dict[str, Path]) -> None:
    res = run_module("tls_check", {"host": "127.0.0.1", "port": port_of(server), "ca_path": str(pki["ca"])},
                     check_mode=True)
    assert res["changed"] is False
    assert res["summary"] == {"total": 5, "passed": 5, "failed": 0, "warned": 0}
