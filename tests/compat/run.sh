#!/usr/bin/env bash
# Run the client-compatibility suite against the ZooKeeper-protocol server named by ZK_HOSTS.
# test_ops.py also needs ZK_ADMIN_URL (the server's admin HTTP) and a real ZooKeeper to compare
# formats with: ZK_REFERENCE_HOSTS and ZK_REFERENCE_ADMIN_URL.
#
#   ZK_HOSTS=127.0.0.1:2181 tests/compat/run.sh [pytest args...]
#   tests/compat/run.sh --reference [pytest args...]
#
# --reference starts the real Apache ZooKeeper 3.8 on a free port (reference_zk.sh), runs the
# suite against it and stops it; that is how the suite itself is checked.
# The Python is $CORRAL_VENV/bin/python (default: .venv in the repository root), a venv with
# kazoo, pytest, prometheus_client and pexpect:
#   python3 -m venv .venv && .venv/bin/pip install kazoo pytest prometheus_client pexpect
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${CORRAL_VENV:-$repo/.venv}"
python="$venv/bin/python"

if [ ! -x "$python" ]; then
    echo "$0: no Python at $python; create the venv:" >&2
    echo "    python3 -m venv $venv && $venv/bin/pip install kazoo pytest prometheus_client pexpect" >&2
    exit 2
fi
if ! "$python" -c 'import kazoo, pytest, prometheus_client, pexpect' 2>/dev/null; then
    echo "$0: $venv lacks kazoo, pytest, prometheus_client or pexpect: $venv/bin/pip install kazoo pytest prometheus_client pexpect" >&2
    exit 2
fi

data_dir=""
status=1
stop_reference() {
    if [ -n "$data_dir" ]; then
        "$here/stop_pid.sh" "$data_dir/zk.pid" || true
        if [ "$status" -eq 0 ]; then
            rm -rf "$data_dir"
        else
            echo "reference ZooKeeper's log kept: $data_dir/zookeeper.log" >&2
        fi
    fi
}

if [ "${1:-}" = "--reference" ]; then
    shift
    port="${ZK_REFERENCE_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
    data_dir="$(mktemp -d "${TMPDIR:-/tmp}/corral-compat-zk.XXXXXX")"
    trap stop_reference EXIT
    admin_port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    ZK_ADMIN_PORT="$admin_port" "$here/reference_zk.sh" "$port" "$data_dir"
    export ZK_HOSTS="127.0.0.1:$port" ZK_ADMIN_URL="http://127.0.0.1:$admin_port"
    export ZK_REFERENCE_HOSTS="$ZK_HOSTS" ZK_REFERENCE_ADMIN_URL="$ZK_ADMIN_URL"
fi

if [ -z "${ZK_HOSTS:-}" ]; then
    echo "$0: set ZK_HOSTS (e.g. ZK_HOSTS=127.0.0.1:2181) or pass --reference" >&2
    exit 2
fi
export ZK_HOSTS

# No .pytest_cache or __pycache__ left in the repository.
status=0
PYTHONDONTWRITEBYTECODE=1 "$python" -m pytest -p no:cacheprovider -ra "$here" "$@" || status=$?
exit "$status"
