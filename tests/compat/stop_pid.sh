#!/usr/bin/env bash
# Stop a process started in the background by reference_zk.sh, given its pid file.
# Sends SIGTERM, waits up to STOP_TIMEOUT_S (default 15) seconds, then SIGKILL. Removes the
# pid file. Exits 0 if the process is gone (or was never running).
#
# Usage: stop_pid.sh PIDFILE
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 PIDFILE" >&2
    exit 2
fi
pid_file="$1"
stop_timeout_s="${STOP_TIMEOUT_S:-15}"

if [ ! -f "$pid_file" ]; then
    echo "$0: no pid file $pid_file; nothing to stop" >&2
    exit 0
fi
pid="$(cat "$pid_file")"
case "$pid" in
    ''|*[!0-9]*) echo "$0: $pid_file does not hold a pid" >&2; exit 2 ;;
esac

if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    deadline=$(( $(date +%s) + stop_timeout_s ))
    while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$0: pid $pid ignored SIGTERM for ${stop_timeout_s}s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
fi
rm -f "$pid_file"
