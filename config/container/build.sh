#!/usr/bin/env bash
# Build capsync's image from this checkout: bash config/container/build.sh
#
#   BASE_IMAGE  the Python 3.11+ base (default python:3.11-slim); any Debian-like image
#               with python3, the venv module, groupadd and useradd
#   IMAGE       the tag (default capsync:<version in pyproject.toml>)
#   PYTHON      the host's Python that makes the wheels (default python3); it must be the
#               base image's Python version, since compiled wheels are made for it
#   DOCKER      the docker command (default docker; DOCKER_HOST etc. as usual)
#   SOURCE      the image's source label (default: the checkout's git origin URL)
#
# The wheels of capsync and every extra are made here by pip, then copied into a build
# context of their own with the Containerfile; the build itself has no network
# (--network=none) and installs them with --no-index.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
checkout="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
docker="${DOCKER:-docker}"
base="${BASE_IMAGE:-python:3.11-slim}"
version="$("$python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$checkout/pyproject.toml")"
image="${IMAGE:-capsync:$version}"
# org.opencontainers.image.source: SOURCE, else the checkout's origin without any
# user:token@ in it (a label is public), else the checkout.
origin="$(git -C "$checkout" remote get-url origin 2>/dev/null | sed 's#://[^/@]*@#://#' || true)"
source="${SOURCE:-${origin:-file://$checkout}}"
revision="$(git -C "$checkout" rev-parse HEAD 2>/dev/null || echo unknown)"

fail() { echo "build.sh: $*" >&2; exit 1; }

"$docker" image inspect "$base" >/dev/null 2>&1 || "$docker" pull "$base" >/dev/null \
  || fail "base image $base: not present and cannot be pulled (set BASE_IMAGE)"
host_python="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
base_python="$("$docker" run --rm --network=none --entrypoint python3 "$base" \
  -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
  || fail "base image $base: no python3 in it"
[ "$host_python" = "$base_python" ] \
  || fail "the wheels would be made by $python ($host_python) but $base has Python $base_python: set PYTHON=python$base_python"

context="$(mktemp -d "${TMPDIR:-/tmp}/capsync-image.XXXXXX")"
trap 'rm -rf "$context"' EXIT
wheel() { "$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$context/wheels" "$@"; }
wheel "$checkout[all]"
# pip resolves on the host by the host's environment markers; the base's Python may need
# more (redis wants async-timeout below Python 3.11.3, and Debian 12 has 3.11.2). Ask the
# base's own pip, offline, what the wheels lack, and make those too, until nothing is.
missing() {
  tar -C "$context" -c wheels | "$docker" run --rm -i --network=none --entrypoint sh "$base" -c '
    mkdir /tmp/w && tar -x -C /tmp/w && python3 -m venv /tmp/v \
    && /tmp/v/bin/pip install --dry-run --quiet --no-index --find-links /tmp/w/wheels "capsync[all]" 2>&1' \
    | sed -n 's/.*No matching distribution found for \([^;]*\).*/\1/p'
}
for _ in 1 2 3 4 5; do
  need="$(missing || true)"
  [ -n "$need" ] || break
  echo "build.sh: the base's Python also needs $need"
  wheel "$need"
done
[ -z "$need" ] || fail "wheels still missing for $base: $need"
cp "$here/Containerfile" "$context/"
mkdir -p "$context/root/opt/capsync" "$context/root/usr/share/capsync/config/examples"
cp "$here/healthcheck.py" "$context/root/opt/capsync/"
cp -r "$checkout"/config/examples/*.toml "$checkout/config/examples/workers" \
  "$context/root/usr/share/capsync/config/examples/"

"$docker" build --network=none --file "$context/Containerfile" --tag "$image" \
  --build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$version" --build-arg "SOURCE=$source" \
  --build-arg "REVISION=$revision" \
  "$context"
echo "build.sh: built $image from $base"
