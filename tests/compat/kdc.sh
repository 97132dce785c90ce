#!/usr/bin/env bash
# Throwaway MIT Kerberos realm, entirely inside DIR (nothing in /etc is read or written).
#
# Usage:  kdc.sh DIR [start]     create realm + principals + keytabs, start krb5kdc, print env
#         kdc.sh DIR stop        kill the KDC whose pid is in DIR/kdc.pid
#         kdc.sh DIR env         print the env again
# env:    REALM (default CORRAL.TEST), KDC_PORT (default: a free port), KDC_PASSWORD (db master pw)
#
# Needs (Debian 12): apt-get install -y krb5-kdc krb5-user, and krb5-admin-server where krb5-kdc
# does not bring kadmin.local (no kadmind is run: everything goes through kadmin.local).
# Run as root (writes only in DIR).
#
# Creates in DIR:
#   krb5.conf kdc.conf kadm5.acl principal* stash kdc.log kdc.pid kdc.port env.sh
#   zookeeper.keytab  zookeeper/localhost@R + zookeeper/127.0.0.1@R  (server)
#   alice.keytab      alice@R            (password also set: alice-pw)
#   bob.keytab        bob@R              (password bob-pw)
#   zkcli.keytab      zkcli/localhost@R
#   zkquorum.keytab   zkquorum/127.0.0.1@R + zkquorum/localhost@R  (members' logins to each other)
#   (mallory@R is deliberately NOT created, for "unknown principal" tests)
set -euo pipefail
dir="${1:?usage: kdc.sh DIR [start|stop|env]}"; cmd="${2:-start}"
mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
REALM="${REALM:-CORRAL.TEST}"

print_env() {
  cat "$dir/env.sh"
  echo "# KDC pid $(cat "$dir/kdc.pid" 2>/dev/null) on 127.0.0.1:$(cat "$dir/kdc.port") (udp+tcp), realm $(cat "$dir/realm")"
  echo "# stop:  $0 $dir stop"
}

case "$cmd" in
  stop)
    [ -f "$dir/kdc.pid" ] || { echo "no $dir/kdc.pid"; exit 0; }
    pid=$(cat "$dir/kdc.pid")
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || { rm -f "$dir/kdc.pid"; echo "KDC $pid stopped"; exit 0; }; sleep 0.25; done
    kill -9 "$pid"; rm -f "$dir/kdc.pid"; echo "KDC $pid killed"; exit 0;;
  env) print_env; exit 0;;
  start) ;;
  *) echo "unknown command $cmd"; exit 2;;
esac

command -v krb5kdc >/dev/null || PATH="$PATH:/usr/sbin"
command -v krb5kdc >/dev/null || { echo "krb5kdc missing: apt-get install -y krb5-kdc krb5-user"; exit 1; }
if [ -f "$dir/kdc.pid" ] && kill -0 "$(cat "$dir/kdc.pid")" 2>/dev/null; then
  echo "KDC already running"; print_env; exit 0
fi

# A port free for both UDP and TCP on 127.0.0.1.
free_port() {
  python3 - <<'PY'
import socket
for _ in range(50):
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p))
    except OSError:
        t.close(); continue
    u.close(); t.close(); print(p); break
PY
}
port="${KDC_PORT:-$(free_port)}"
echo "$port" > "$dir/kdc.port"; echo "$REALM" > "$dir/realm"

cat > "$dir/krb5.conf" <<EOF
[libdefaults]
    default_realm = $REALM
    dns_lookup_realm = false
    dns_lookup_kdc = false
    dns_canonicalize_hostname = false
    rdns = false
    ignore_acceptor_hostname = false
    ticket_lifetime = 24h
    renew_lifetime = 7d
    forwardable = true
    udp_preference_limit = 1
    default_ccache_name = FILE:$dir/ccache

[realms]
    $REALM = {
        kdc = 127.0.0.1:$port
        admin_server = 127.0.0.1:$((port + 1))
    }

[domain_realm]
    localhost = $REALM
    127.0.0.1 = $REALM
    .localhost = $REALM
EOF

cat > "$dir/kdc.conf" <<EOF
[kdcdefaults]
    kdc_listen = 127.0.0.1:$port
    kdc_tcp_listen = 127.0.0.1:$port

[realms]
    $REALM = {
        database_name = $dir/principal
        key_stash_file = $dir/stash
        acl_file = $dir/kadm5.acl
        admin_keytab = FILE:$dir/kadm5.keytab
        kdc_listen = 127.0.0.1:$port
        kdc_tcp_listen = 127.0.0.1:$port
        max_life = 24h
        max_renewable_life = 7d
        master_key_type = aes256-cts-hmac-sha1-96
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
    }

[logging]
    kdc = FILE:$dir/kdc.log
    admin_server = FILE:$dir/kadmin.log
    default = FILE:$dir/krb5lib.log
EOF
echo "*/admin@$REALM *" > "$dir/kadm5.acl"

cat > "$dir/env.sh" <<EOF
export KRB5_CONFIG=$dir/krb5.conf
export KRB5_KDC_PROFILE=$dir/kdc.conf
export KRB5CCNAME=FILE:$dir/ccache
# Java: -Djava.security.krb5.conf=$dir/krb5.conf   (debug: -Dsun.security.krb5.debug=true)
# MIT tracing: KRB5_TRACE=/dev/stderr
EOF
export KRB5_CONFIG="$dir/krb5.conf" KRB5_KDC_PROFILE="$dir/kdc.conf" KRB5CCNAME="FILE:$dir/ccache"

rm -f "$dir"/principal* "$dir/stash" "$dir"/*.keytab "$dir/ccache"
kdb5_util create -s -r "$REALM" -P "${KDC_PASSWORD:-master-pw-not-secret}" > "$dir/kdb5_util.log" 2>&1 \
  || { cat "$dir/kdb5_util.log"; exit 1; }

ka() { kadmin.local -r "$REALM" -q "$1" >> "$dir/kadmin.local.log" 2>&1 || { tail "$dir/kadmin.local.log"; exit 1; }; }
ka "addprinc -randkey zookeeper/localhost@$REALM"
ka "addprinc -randkey zookeeper/127.0.0.1@$REALM"
ka "addprinc -pw alice-pw alice@$REALM"
ka "addprinc -pw bob-pw bob@$REALM"
ka "addprinc -randkey zkcli/localhost@$REALM"
ka "addprinc -randkey zkquorum/127.0.0.1@$REALM"
ka "addprinc -randkey zkquorum/localhost@$REALM"
# -norandkey keeps the password (alice can kinit with alice-pw or with the keytab)
ka "ktadd -norandkey -k $dir/zookeeper.keytab zookeeper/localhost@$REALM zookeeper/127.0.0.1@$REALM"
ka "ktadd -norandkey -k $dir/alice.keytab alice@$REALM"
ka "ktadd -norandkey -k $dir/bob.keytab bob@$REALM"
ka "ktadd -norandkey -k $dir/zkcli.keytab zkcli/localhost@$REALM"
ka "ktadd -norandkey -k $dir/zkquorum.keytab zkquorum/127.0.0.1@$REALM zkquorum/localhost@$REALM"
chmod 600 "$dir"/*.keytab

# krb5kdc daemonizes and writes the pid file (-n would keep it in the foreground).
krb5kdc -r "$REALM" -P "$dir/kdc.pid"
for i in $(seq 1 40); do [ -s "$dir/kdc.pid" ] && break; sleep 0.25; done
pid=$(cat "$dir/kdc.pid")
kill -0 "$pid" || { echo "krb5kdc died"; cat "$dir/kdc.log"; exit 1; }
# wait until it answers (an AS request for a principal that does not exist)
for i in $(seq 1 40); do
  if kinit -kt "$dir/alice.keytab" -c "FILE:$dir/probe.ccache" "alice@$REALM" 2>/dev/null; then
    rm -f "$dir/probe.ccache"; break; fi
  sleep 0.25
done
echo "# realm $REALM ready in $dir"
print_env
