#!/usr/bin/env bash
# Installs Droplet on one VM: the `droplet` user, a venv, the configuration file and the
# systemd units. Idempotent: run it again to upgrade (the configuration is never
# overwritten). Run as root, from a copy of the project's deploy/ directory:
#
#   sudo deploy/install.sh /path/to/droplet-checkout        # a source tree
#   sudo deploy/install.sh /tmp/droplet-0.1.0-py3-none-any.whl
#
# Options:
#   --prefix DIR    where the venv goes (default /opt/droplet; the units are rewritten to match)
#   --python PATH   the Python to build the venv with (default python3; 3.11 or newer)
#   --no-units      do not install the systemd units
# pip honours PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX etc. for offline installs.
# Nothing is started or enabled: the script prints the commands for that.
set -euo pipefail

PREFIX=/opt/droplet
PYTHON=python3
UNITS=yes
SOURCE=""
USER_NAME=droplet
CONFIG_DIR=/etc/droplet
STATE_DIR=/var/lib/droplet
UNIT_DIR=/etc/systemd/system
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

step() {
    echo "==> $*"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX="$2"; shift 2 ;;
        --python) [ $# -ge 2 ] || die "--python needs a path"; PYTHON="$2"; shift 2 ;;
        --no-units) UNITS=no; shift ;;
        -h|--help) usage 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$SOURCE" ] || die "one source only"; SOURCE="$1"; shift ;;
    esac
done

[ -n "$SOURCE" ] || usage 2
[ "$(id -u)" -eq 0 ] || die "run as root"
[ -e "$SOURCE" ] || die "no such file or directory: $SOURCE"
case "$PREFIX" in
    /*) ;;
    *) die "--prefix must be an absolute path" ;;
esac
PREFIX="${PREFIX%/}"
[ -n "$PREFIX" ] || die "--prefix must not be /"
# A source tree is installed by its absolute path (pip would read a bare name as a package).
if [ -d "$SOURCE" ]; then
    [ -f "$SOURCE/pyproject.toml" ] || die "$SOURCE has no pyproject.toml"
    SOURCE="$(cd "$SOURCE" && pwd)"
else
    SOURCE="$(cd "$(dirname "$SOURCE")" && pwd)/$(basename "$SOURCE")"
fi
for file in droplet.toml.example systemd/droplet-scheduler.service \
        systemd/droplet-worker@.service systemd/droplet-workers.target; do
    [ -f "$HERE/$file" ] || die "missing $HERE/$file: run the script from the deploy/ directory"
done

command -v "$PYTHON" >/dev/null 2>&1 || die "no $PYTHON (apt-get install python3)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON is older than 3.11"
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
    || die "$PYTHON cannot build a venv (apt-get install python3-venv)"

VENV="$PREFIX/venv"

step "user $USER_NAME"
if ! getent group "$USER_NAME" >/dev/null; then
    groupadd --system "$USER_NAME"
fi
if ! getent passwd "$USER_NAME" >/dev/null; then
    useradd --system --gid "$USER_NAME" --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "Droplet services" "$USER_NAME"
fi
install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$STATE_DIR"

step "venv $VENV"
install -d -m 0755 "$PREFIX"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip \
    || echo "    could not upgrade pip (offline?): keeping the venv's own"
step "pip install $SOURCE"
# First the project with its dependencies, then the given build itself again, so that
# re-running with a rebuilt wheel of the same version really replaces the installed one.
"$VENV/bin/python" -m pip install --quiet --upgrade "$SOURCE"
"$VENV/bin/python" -m pip install --quiet --no-deps --force-reinstall "$SOURCE"
"$VENV/bin/droplet" --help >/dev/null || die "the installed droplet command does not run"

step "deploy files in $PREFIX/deploy"
install -d -m 0755 "$PREFIX/deploy" "$PREFIX/deploy/systemd"
install -m 0644 "$HERE/droplet.toml.example" "$PREFIX/deploy/droplet.toml.example"
install -m 0755 "$HERE/install.sh" "$PREFIX/deploy/install.sh"
if [ -f "$HERE/README.md" ]; then
    install -m 0644 "$HERE/README.md" "$PREFIX/deploy/README.md"
fi
install -m 0644 "$HERE"/systemd/droplet-* "$PREFIX/deploy/systemd/"

step "configuration $CONFIG_DIR/droplet.toml"
install -d -m 0750 -o root -g "$USER_NAME" "$CONFIG_DIR"
if [ -e "$CONFIG_DIR/droplet.toml" ]; then
    echo "    kept the existing $CONFIG_DIR/droplet.toml"
else
    install -m 0640 -o root -g "$USER_NAME" "$HERE/droplet.toml.example" \
        "$CONFIG_DIR/droplet.toml"
    echo "    new $CONFIG_DIR/droplet.toml from the example: edit it before starting"
fi

step "command /usr/local/bin/droplet"
WRAPPER=/usr/local/bin/droplet
MARK="# droplet wrapper (deploy/install.sh)"
if [ -e "$WRAPPER" ] && ! grep -qF "$MARK" "$WRAPPER"; then
    echo "    $WRAPPER exists and is not ours: left alone; use $VENV/bin/droplet"
else
    tmp="$(mktemp)"
    cat >"$tmp" <<EOF
#!/bin/sh
$MARK
# The fleet's configuration unless DROPLET_CONFIG says otherwise.
: "\${DROPLET_CONFIG:=$CONFIG_DIR/droplet.toml}"
export DROPLET_CONFIG
exec "$VENV/bin/droplet" "\$@"
EOF
    install -m 0755 "$tmp" "$WRAPPER"
    rm -f "$tmp"
fi

if [ "$UNITS" = yes ]; then
    step "systemd units in $UNIT_DIR"
    for unit in droplet-scheduler.service droplet-worker@.service droplet-workers.target; do
        tmp="$(mktemp)"
        sed "s#/opt/droplet#$PREFIX#g" "$HERE/systemd/$unit" >"$tmp"
        install -m 0644 "$tmp" "$UNIT_DIR/$unit"
        rm -f "$tmp"
    done
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    else
        echo "    systemd is not running here: units installed, not loaded"
    fi
fi

cores="$(nproc 2>/dev/null || echo 4)"
cat <<EOF

Droplet $("$VENV/bin/python" -c 'import droplet; print(droplet.__version__)') is installed in $VENV.

Next steps:
  1. Edit $CONFIG_DIR/droplet.toml (broker_url, etcd_endpoints, credentials, signing_key);
     the same file goes on every VM of the fleet.
  2. Check that this VM reaches the broker and etcd:
       sudo -u $USER_NAME droplet status
  3. Start the services this VM runs:
       systemctl enable --now droplet-scheduler            # on one or two VMs
       systemctl enable --now droplet-worker@{1..$cores}   # workers: one per core
     and follow them with: journalctl -f -u 'droplet-*'
EOF
