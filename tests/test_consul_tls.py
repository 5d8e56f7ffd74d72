"""TLS to Consul through Consul's own variables: CONSUL_HTTP_ADDR=https://...,
CONSUL_CACERT, CONSUL_CLIENT_CERT/KEY and CONSUL_HTTP_SSL_VERIFY, against the double
serving https (with client certificates required, as verify_incoming does)."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.doubles.consul import ConsulDouble
from tests.test_sync_contract import EXAMPLES


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


def make_pki(d: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1, and a client certificate."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=d,
    )
    for name, extra in (
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=d,
        )
        (d / f"{name}.ext").write_text(extra + "\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.pem",
            cwd=d,
        )
    return d


@pytest.fixture
def https_double(pki: Path) -> Iterator[ConsulDouble]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    context.verify_mode = ssl.CERT_REQUIRED
    with ConsulDouble(tls=context) as double:
        yield double


def sync(double: ConsulDouble, **env: str):
    return run_cli(
        "run",
        "--once",
        "--owner",
        "tls",
        "--source",
        f"file:{EXAMPLES}",
        env={"CONSUL_HTTP_ADDR": double.url, **env},
    )


def test_https_with_ca_and_client_certificate(https_double: ConsulDouble, pki: Path):
    result = sync(
        https_double,
        CONSUL_CACERT=str(pki / "ca.pem"),
        CONSUL_CLIENT_CERT=str(pki / "client.pem"),
        CONSUL_CLIENT_KEY=str(pki / "client.key"),
    )
    assert result.returncode == 0, result.stderr
    assert "9 created" in result.stdout


def test_unknown_ca_is_refused(https_double: ConsulDouble, pki: Path):
    result = sync(
        https_double,
        CONSUL_CLIENT_CERT=str(pki / "client.pem"),
        CONSUL_CLIENT_KEY=str(pki / "client.key"),
    )
    assert result.returncode == 1
    assert f"cannot reach Consul at {https_double.url} (SSLError)" in result.stderr


def test_missing_client_certificate_is_refused(https_double: ConsulDouble, pki: Path):
    result = sync(https_double, CONSUL_CACERT=str(pki / "ca.pem"))
    assert result.returncode == 1 and "cannot reach Consul" in result.stderr


def test_verification_off(https_double: ConsulDouble, pki: Path):
    result = sync(
        https_double,
        CONSUL_HTTP_SSL_VERIFY="false",
        CONSUL_CLIENT_CERT=str(pki / "client.pem"),
        CONSUL_CLIENT_KEY=str(pki / "client.key"),
    )
    assert result.returncode == 0, result.stderr
    # Said once, as an event; not a urllib3 warning on every request.
    assert result.stderr.count("tls_verification_off") == 1, result.stderr
    assert "InsecureRequestWarning" not in result.stderr
