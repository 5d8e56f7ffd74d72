"""requests' own environment still applies to capsync's Consul client (HTTP(S)_PROXY,
NO_PROXY, REQUESTS_CA_BUNDLE), read once when the client is made rather than on every
request: through `capsync run --once`, as a user sets them."""

from __future__ import annotations

from pathlib import Path

from tests.doubles.consul import ConsulDouble
from tests.test_consul_tls import https_double, pki, sync  # noqa: F401 (fixtures)

NO_PROXY = {"NO_PROXY": "", "no_proxy": ""}


def test_a_proxy_from_the_environment_is_used_unless_no_proxy_names_consul() -> None:
    with ConsulDouble() as double:
        dead = "http://127.0.0.1:1"  # a proxy nobody listens on: going through it fails
        through = sync(double, HTTP_PROXY=dead, http_proxy=dead, **NO_PROXY)
        assert through.returncode == 1
        assert f"cannot reach Consul at {double.url} (ProxyError)" in through.stderr
        assert double.count("PUT") == 0
        bypass = sync(double, HTTP_PROXY=dead, http_proxy=dead, NO_PROXY="127.0.0.1")
        assert bypass.returncode == 0, bypass.stderr
        assert "9 created" in bypass.stdout


def test_the_environment_s_ca_bundle_verifies_consul(
    https_double: ConsulDouble,  # noqa: F811
    pki: Path,  # noqa: F811
) -> None:
    client = {
        "CONSUL_CLIENT_CERT": str(pki / "client.pem"),
        "CONSUL_CLIENT_KEY": str(pki / "client.key"),
    }
    result = sync(https_double, REQUESTS_CA_BUNDLE=str(pki / "ca.pem"), **client)
    assert result.returncode == 0, result.stderr
    assert "9 created" in result.stdout
