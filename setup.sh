#!/usr/bin/env bash
# One idempotent set-up for a Debian 12 machine (run as root): apt packages, the
# project venv (.venv, --system-site-packages, Debian's /usr/bin/python3) and the
# Ryu 4.34 venv (.venv-ryu).  README, CI and the Vagrant provisioning all call it.
# A stamp keyed by this script's and pyproject.toml's hash makes repeat runs instant.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
PY=/usr/bin/python3
STAMP=.venv/.setup-stamp
want=$(cat setup.sh pyproject.toml | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ "${1:-}" != "--force" ]; then
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (it installs Debian packages)" >&2
    exit 2
fi

APT_PACKAGES=(
    mininet openvswitch-switch openvswitch-common python3-os-ken
    python3-venv python3-pip python3-dev python3-numpy python3-yaml
    iputils-ping ethtool iproute2 nftables iptables tcpdump tshark iperf3
    procps psmisc kmod gcc
    openssh-client openssh-server
    chromium
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"

# The browser tests drive Debian's chromium (/usr/bin/chromium) through Playwright's Python
# API (the pip package from the test extra); never `playwright install`: no browser
# download is needed or wanted.

# Ryu 4.34 (the original, unmaintained Ryu) only builds with old setuptools and
# runs with an old eventlet; it gets a venv of its own so it cannot disturb os-ken.
if [ ! -x .venv-ryu/bin/ryu-manager ]; then
    "$PY" -m venv --system-site-packages .venv-ryu
    .venv-ryu/bin/python -m pip install -q "setuptools<58" wheel
    .venv-ryu/bin/python -m pip install -q "eventlet==0.33.3" "dnspython==2.6.1"
    .venv-ryu/bin/python -m pip install -q --no-build-isolation "ryu==4.34"
fi

echo "$want" > "$STAMP"
echo "setup.sh: ready (venv: $ROOT/.venv, Ryu venv: $ROOT/.venv-ryu)"
