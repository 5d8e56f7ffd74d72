#!/usr/bin/env bash
# The test command (README, and .ci/run calls exactly this): set up what the tests need on
# a fresh machine, then lint, type-check and run the suite. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need: a Docker engine and a static busybox for its test image,
# systemd-analyze (works without a running systemd) for the unit's checks, Redis and
# PostgreSQL servers (the fixtures start private instances; tests/services.py),
# RabbitMQ (tests/rabbitmq.py), Prometheus with promtool (tests/prometheus.py), kubectl and
# Node for the real-client tests of the doubles, and debootstrap for the Debian Python base
# capsync's image is built on (tests/container_image.py; under CI=true the tests fail
# without any of them).
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
[ -x /bin/kill ] || need+=(procps)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || need+=(busybox-static)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
# kubectl for tests/test_kubectl.py: Debian's kubernetes-client (1.20) is the packaged build
# this machine's registries carry (the suite passes with it and with newer ones); Node and
# npm run the independent Consul client of tests/test_consul_node_client.py.
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need+=(prometheus)
[ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    # Another apt (an unattended upgrade on a fresh machine) may hold the lock: wait for it.
    apt-get -o DPkg::Lock::Timeout=600 update -q
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need[@]}"
  else
    echo "check.sh: the tests need these Debian packages: ${need[*]}" >&2
  fi
fi

# The npm consul client, pinned by its lockfile, into tests/consul_client/node_modules
# (gitignored): a Consul client capsync did not write, to check the Consul double with.
if command -v npm >/dev/null 2>&1; then
  npm ci --prefix tests/consul_client --no-audit --no-fund --loglevel=error
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[all,test]'

.venv/bin/ruff check daemon discovery config tests
.venv/bin/ruff format --check daemon discovery config tests
.venv/bin/mypy
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "check.sh: pytest collected no tests; that is a failure" >&2
fi
exit "$status"
