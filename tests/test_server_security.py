"""Security settings of ``policyengine serve``: loopback by default, bearer tokens, TLS and mTLS, limits, timeouts."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from server_process import ALLOW, RULES, Server
from services import free_port

from policyengine.audit import generate_key


def test_binds_loopback_by_default(tmp_path: Path) -> None:
    with Server(tmp_path, "--rules", str(RULES)) as running:
        assert running.url.startswith("http://127.0.0.1:")


NO_AUTH = ("warning: listening on 0.0.0.0 with neither --auth-token-file nor --client-ca: anyone who reaches the "
           "port may ask for decisions and charge budgets")
TOKEN_IN_CLEAR = ("warning: listening on 0.0.0.0 over plain http: the bearer token of --auth-token-file crosses the "
                  "network in clear; give --tls-cert and --tls-key, or put a TLS proxy in front")


@pytest.mark.parametrize(("args", "warnings"), [
    (["--host", "0.0.0.0"], [NO_AUTH]),  # every interface, no auth: said at start, once
    (["--host", "0.0.0.0", "--auth-token-file", "token"], [TOKEN_IN_CLEAR]),
    (["--host", "0.0.0.0", "--auth-token-file", "token", "--tls-cert", "server.crt", "--tls-key", "server.key"], []),
    (["--host", "127.0.0.1"], []),
    (["--host", "localhost"], []),
])
def test_an_unprotected_listener_off_loopback_is_warned_about(tmp_path: Path, args: list[str],
                                                               warnings: list[str]) -> None:
    (tmp_path / "token").write_text("s3cret-token\n")
    if "server.crt" in args:
        _pki(tmp_path)
    with Server(tmp_path, "--rules", str(RULES), *args) as running:
        said = [line for line in running.lines if line.startswith("warning: ")]
    assert said == warnings


def test_bearer_token_guards_every_route_but_the_probes(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret-token\n")
    with Server(tmp_path, "--rules", str(RULES), "--auth-token-file", "token") as running:
        missing = running.post("/v1/decide", ALLOW)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert running.post("/v1/decide", ALLOW, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert running.client.get("/metrics").status_code == 401
        good = running.post("/v1/decide", ALLOW, headers={"Authorization": "Bearer s3cret-token"})
        assert good.status_code == 200 and good.json()["effect"] == "allow"
        for lines in ([("Authorization", "Bearer wrong"), ("Authorization", "Bearer s3cret-token")],
                      [("Authorization", "Bearer s3cret-token"), ("Authorization", "Bearer wrong")]):
            twice = running.post("/v1/decide", ALLOW, headers=lines)  # no reader may take one line of two
            assert twice.status_code == 401, lines
        assert running.client.get("/health").status_code == 200
        assert running.client.get("/ready").status_code == 200


def test_body_size_limit_and_body_timeout(tmp_path: Path) -> None:
    with Server(tmp_path, "--rules", str(RULES), "--max-body", "200", "--timeout", "0.5") as running:
        big = running.client.post("/v1/decide", content=b"{" + b" " * 300 + b"}")
        assert big.status_code == 413 and "200 bytes" in big.json()["error"]
        assert running.post("/v1/decide", ALLOW).status_code == 200
        host, port = running.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as slow:
            slow.sendall(b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"principal\"")  # and never the rest
            answer = slow.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
                 *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(
            __import__("ipaddress").ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))


def _pki(tmp_path: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    _write(tmp_path / "ca", _certificate("test ca", ca_key, "test ca", ca_key, ca=True), ca_key)
    for name in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(tmp_path / name, _certificate(name, key, "test ca", ca_key, server=name == "server"), key)


def test_tls_and_client_certificates(tmp_path: Path) -> None:
    _pki(tmp_path)
    with Server(tmp_path, "--rules", str(RULES), "--tls-cert", "server.crt", "--tls-key", "server.key",
                "--client-ca", "ca.crt") as running:
        assert running.url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        with pytest.raises(httpx.HTTPError):  # no client certificate: the handshake fails
            httpx.post(f"{running.url}/v1/decide", json=ALLOW, verify=trusted, timeout=30)
        trusted.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")
        answer = httpx.post(f"{running.url}/v1/decide", json=ALLOW, verify=trusted, timeout=30)
        assert answer.status_code == 200 and answer.json()["effect"] == "allow"
        metadata = httpx.get(f"{running.url}/.well-known/authzen-configuration", verify=trusted, timeout=30).json()
        assert metadata["access_evaluation_endpoint"].startswith("https://")


def _serve(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", "serve", "--port", "0", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("args", "message"), [
    (["--rules", str(RULES), "--key", "k.key", "--tls-cert", "c.pem"], "give both --tls-cert and --tls-key"),
    (["--rules", str(RULES), "--key", "k.key", "--auth-token-file", "nope"], "nope: cannot read the auth token"),
    (["--bundle", "b.tar.gz", "--key", "k.key"], "--bundle needs --bundle-pubkey"),
    (["--rules", str(RULES), "--key", "missing.key"], "keys generate"),
    (["--rules", str(RULES), "--key", "k.key", "--tls-cert", "server.crt", "--tls-key", "server.key", "--client-ca",
      "empty.pem"], "--client-ca empty.pem: no CA certificate can be read from it"),
    (["--key", "k.key"], "give either --rules PATH or --bundle FILE"),
    (["--rules", "no-such-dir", "--key", "k.key"], "no-such-dir"),
    # an empty --ledger or --state was the in-memory ledger: budgets back at zero, not shared
    (["--rules", str(RULES), "--key", "k.key", "--ledger", ""], "error: --ledger: empty; leave it out for the default"),
    (["--rules", str(RULES), "--key", "k.key", "--state", " "],
     "error: --state (POLICYENGINE_STATE) is empty; give the URL or unset it for the default"),
])
def test_bad_settings_are_one_line_errors_and_exit_1(tmp_path: Path, args: list[str], message: str) -> None:
    generate_key(tmp_path / "k.key")
    if "server.crt" in args:
        _pki(tmp_path)
        (tmp_path / "empty.pem").write_text("")  # a CA file with no certificate: was read first after startup
    try:
        done = _serve(tmp_path, *args)
    except subprocess.TimeoutExpired:
        pytest.fail("the server started")
    assert done.returncode in (1, 2), done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def _two_workers(tmp_path: Path, *options: str) -> tuple[list[str], int]:
    """``serve --workers 2`` of the shipped rules on a free port (a fresh key in ``tmp_path``), and the port."""
    generate_key(tmp_path / "k.key")
    port = free_port()
    return [sys.executable, "-m", "policyengine", "serve", "--rules", str(RULES), "--key", "k.key", "--db",
            "audit.duckdb", "--port", str(port), "--workers", "2", *options, "--no-access-log"], port


def test_workers_without_shared_state_refuse_a_policy_with_budgets(tmp_path: Path) -> None:
    """Each worker would keep its own in-memory ledger: two workers admitted twice every budget's limit."""
    command, _ = _two_workers(tmp_path)
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert ("the policy declares budgets, and each of the 2 workers would keep its own ledger and admit 2 times "
            "every limit; share one with --state postgresql://...") in done.stderr
    assert "Traceback" not in done.stderr


def test_workers_each_write_their_own_verified_audit_segment(tmp_path: Path) -> None:
    command, port = _two_workers(tmp_path, "--ledger-per-worker")
    proc = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        answers = 0
        while answers < 40 and time.monotonic() < deadline:
            try:
                with httpx.Client(timeout=10) as client:  # a new connection each time: the kernel spreads them
                    if client.post(f"http://127.0.0.1:{port}/v1/decide", json=ALLOW).status_code == 200:
                        answers += 1
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert answers == 40
    decided = 0
    for worker in (0, 1):
        segment = tmp_path / f"audit.worker{worker}.duckdb"
        checked = subprocess.run([sys.executable, "-m", "policyengine", "audit", "verify", "--db", str(segment),
                                  "--pubkey", "k.key.pub.pem"], cwd=tmp_path, capture_output=True, text=True,
                                 timeout=120)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        import duckdb
        con = duckdb.connect(str(segment), read_only=True)
        decided += con.execute("SELECT count(*) FROM audit_log WHERE event = 'decision'").fetchone()[0]
        con.close()
    assert decided == 40
