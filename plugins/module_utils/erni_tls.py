# erni-deploy: TLS certificate checks shared by the modules (tls_check).
"""Read a TLS endpoint's certificate and judge it: reachable, chain, hostname, expiry.

check_endpoint() connects twice. The first handshake does not verify anything: it only reads
the peer certificate, so that an untrusted, expired or misnamed certificate can still be
described (subject, names, dates). The second handshake verifies the chain against a CA file
or the system trust store, exactly as a client would. The hostname is matched on the parsed
certificate (DNS names with RFC 6125 wildcards, and IP address SANs), so each problem is
reported as its own check instead of one handshake error hiding the others.

Every check is a dict {name, status: pass|fail|warn, value, limit, reason}; reason is None
when the check passed. Times are UTC ISO 8601 with a trailing Z, durations seconds.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from datetime import UTC, datetime
from typing import Any

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = exc

SYSTEM_STORE = "system trust store"


class Unreachable(Exception):
    """No certificate could be read from the endpoint; the message says why."""


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check(name: str, ok: bool, value: Any, limit: Any, reason: str | None) -> dict[str, Any]:
    return {"name": name, "status": "pass" if ok else "fail", "value": value, "limit": limit,
            "reason": None if ok else reason}


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _sni(server_name: str) -> str | None:
    """The name to send as SNI; None for an IP address (SNI carries host names only)."""
    return None if _as_ip(server_name) is not None else server_name


def _as_ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


def _connect(host: str, port: int, timeout: float, context: ssl.SSLContext, server_name: str) -> bytes:
    """One TCP connection and TLS handshake; the peer certificate in DER.

    Raises Unreachable for network problems, ssl.SSLCertVerificationError when a verifying
    context refuses the chain, ssl.SSLError for any other TLS failure.
    """
    where = _where(host, port)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError as exc:
        raise Unreachable(f"connection refused by {where}") from exc
    except TimeoutError as exc:
        raise Unreachable(f"no connection to {where} within {timeout:g} s") from exc
    except socket.gaierror as exc:
        raise Unreachable(f"cannot resolve host {host!r}: {exc.strerror or exc}") from exc
    except OSError as exc:
        raise Unreachable(f"cannot connect to {where}: {exc.strerror or exc}") from exc
    try:
        with context.wrap_socket(sock, server_hostname=_sni(server_name)) as tls:
            der = tls.getpeercert(binary_form=True)
    except TimeoutError as exc:
        raise Unreachable(f"no TLS handshake with {where} within {timeout:g} s") from exc
    except ssl.SSLError:
        raise
    except OSError as exc:
        raise Unreachable(f"TLS handshake with {where} failed: {exc.strerror or exc}") from exc
    finally:
        sock.close()
    if not der:
        raise Unreachable(f"{where} sent no certificate")
    return der


def fetch_certificate(host: str, port: int, server_name: str, timeout: float) -> tuple[bytes, float]:
    """The peer certificate (DER), read without verifying anything, and the seconds it took."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    t0 = time.monotonic()
    try:
        der = _connect(host, port, timeout, context, server_name)
    except ssl.SSLError as exc:
        raise Unreachable(f"TLS handshake with {_where(host, port)} failed: {exc.reason or exc}") from exc
    return der, round(time.monotonic() - t0, 3)


def load_ca_context(ca_path: str | None) -> ssl.SSLContext:
    """A verifying context (chain only, the hostname is judged separately).

    Raises ValueError naming ca_path when it holds no usable certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    if ca_path:
        try:
            context.load_verify_locations(cafile=ca_path)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"ca_path {ca_path} holds no usable CA certificate ({exc}): "
                             "point it at a PEM file with the issuing CA") from exc
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context


def verify_chain(host: str, port: int, server_name: str, timeout: float, context: ssl.SSLContext,
                 ca_label: str) -> dict[str, Any]:
    """The "chain" check: does a verifying handshake accept the certificate the server sends?"""
    try:
        _connect(host, port, timeout, context, server_name)
    except ssl.SSLCertVerificationError as exc:
        message = exc.verify_message or str(exc.reason or exc)
        return check("chain", False, message, ca_label,
                     f"certificate chain does not verify against the {ca_label}: {message}")
    except ssl.SSLError as exc:
        message = str(exc.reason or exc)
        return check("chain", False, message, ca_label, f"verifying handshake failed: {message}")
    except Unreachable as exc:
        return check("chain", False, "not verified", ca_label, f"verifying handshake: {exc}")
    return check("chain", True, "ok", ca_label, None)


def names_of(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) of the subjectAltName extension; empty when there is none."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    dns = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    ips = [str(n) for n in san.get_values_for_type(x509.IPAddress)]
    return dns, ips


def all_names(cert: x509.Certificate) -> list[str]:
    """Every subjectAltName entry as text (DNS, IP, URI, e-mail), in certificate order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out = []
    for general_name in san:
        value = general_name.value
        out.append(value.rfc4514_string() if isinstance(value, x509.Name) else str(value))
    return out


def _dns_match(pattern: str, name: str) -> bool:
    """RFC 6125: exact match, or a whole-label "*" leftmost that stands for exactly one label."""
    pattern = pattern.rstrip(".").lower()
    name = name.rstrip(".").lower()
    if pattern == name:
        return True
    if not pattern.startswith("*."):
        return False
    suffix = pattern[1:]  # ".example.com"
    # the wildcard must not reach a public suffix on its own ("*.com") nor match several labels
    if suffix.count(".") < 2 or not name.endswith(suffix):
        return False
    head = name[: -len(suffix)]
    return bool(head) and "." not in head


def _idna(name: str) -> str:
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name.lower()


def hostname_check(cert: x509.Certificate, server_name: str) -> dict[str, Any]:
    dns, ips = names_of(cert)
    names = dns + ips
    ip = _as_ip(server_name)
    if ip is not None:
        ok = any(_as_ip(candidate) == ip for candidate in ips)
    else:
        wanted = _idna(server_name)
        ok = any(_dns_match(pattern, wanted) for pattern in dns)
    if ok:
        return check("hostname", True, server_name, names, None)
    if not names:
        return check("hostname", False, server_name, names,
                     f"the certificate has no subjectAltName, so it is valid for no name; "
                     f"it must list {server_name}")
    kind = "IP address" if ip is not None else "name"
    return check("hostname", False, server_name, names,
                 f"{kind} {server_name} is not among the certificate's names: {', '.join(names)}")


def describe(cert: x509.Certificate, now: datetime) -> dict[str, Any]:
    """The certificate facts returned to the caller."""
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    fingerprint = cert.fingerprint(hashes.SHA256()).hex().upper()
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "san": all_names(cert),
        "not_before": utc_iso(not_before),
        "not_after": utc_iso(not_after),
        "days_left": round((not_after - now).total_seconds() / 86400.0, 1),
        "serial": format(cert.serial_number, "x"),
        "fingerprint_sha256": ":".join(fingerprint[i:i + 2] for i in range(0, len(fingerprint), 2)),
    }


def time_checks(cert: x509.Certificate, now: datetime, min_days_left: float) -> list[dict[str, Any]]:
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    days_left = round((not_after - now).total_seconds() / 86400.0, 1)
    if not_after <= now:
        reason = f"the certificate expired {-days_left:g} days ago ({utc_iso(not_after)}): renew it"
    else:
        reason = (f"the certificate expires in {days_left:g} days ({utc_iso(not_after)}), "
                  f"less than the {min_days_left:g} days required: renew it")
    days_ok = days_left >= min_days_left and not_after > now
    early_by = (not_before - now).total_seconds() / 86400.0
    return [
        check("days_left", days_ok, days_left, min_days_left, reason),
        check("not_yet_valid", not_before <= now, utc_iso(not_before), utc_iso(now),
              f"the certificate is not valid before {utc_iso(not_before)} "
              f"({early_by:.1f} days from now): check the issuer's clock or wait"),
    ]


def check_endpoint(host: str, port: int, server_name: str | None = None, ca_path: str | None = None,
                   min_days_left: float = 30.0, timeout: float = 5.0,
                   now: datetime | None = None) -> dict[str, Any]:
    """Everything tls_check returns except changed/msg: checks, certificate facts, summary.

    The certificate facts are None when no certificate could be read. Raises ValueError
    (naming ca_path) only for a CA file that cannot be loaded: that is bad input.
    """
    server_name = server_name or host
    context = load_ca_context(ca_path)
    ca_label = f"CA file {ca_path}" if ca_path else SYSTEM_STORE
    facts: dict[str, Any] = dict.fromkeys(
        ("subject", "issuer", "san", "not_before", "not_after", "days_left", "serial", "fingerprint_sha256"))
    try:
        der, seconds = fetch_certificate(host, port, server_name, timeout)
    except Unreachable as exc:
        checks = [check("reachable", False, None, timeout, str(exc))]
        return {"checks": checks, **facts, "summary": summarize(checks)}
    now = now or datetime.now(UTC)
    checks = [check("reachable", True, seconds, timeout, None)]
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        checks.append(check("chain", False, "unparsable", ca_label,
                            f"the certificate sent by {_where(host, port)} cannot be parsed: {exc}"))
        return {"checks": checks, **facts, "summary": summarize(checks)}
    facts.update(describe(cert, now))
    checks.append(verify_chain(host, port, server_name, timeout, context, ca_label))
    checks.append(hostname_check(cert, server_name))
    checks.extend(time_checks(cert, now, min_days_left))
    return {"checks": checks, **facts, "summary": summarize(checks)}


def summarize(checks: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "total": len(checks),
        "passed": sum(c["status"] == "pass" for c in checks),
        "failed": sum(c["status"] == "fail" for c in checks),
        "warned": sum(c["status"] == "warn" for c in checks),
    }
