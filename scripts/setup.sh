#!/usr/bin/env bash
# Installs what Corral's tests and benchmarks need, only what is missing: Debian's zookeeper
# (the reference server and zkCli.sh, with its Jetty AdminServer), zookeeper-bin (the C client),
# netcat, a JDK, Curator (libcurator-framework-java), npm, and a Python venv (.venv, or
# $CORRAL_VENV) with kazoo, pytest, prometheus_client, pexpect, pure-sasl, kerberos and selenium;
# Chromium and its ChromeDriver for the console's browser tests. Also
# MIT Kerberos (libkrb5-dev, libclang-dev to build; krb5-kdc and krb5-user for the tests). scripts/test.sh and bench/compare run it first.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CORRAL_VENV:-$PWD/.venv}"

missing=()
[ -r /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
[ -x /usr/lib/zookeeper/bin/cli_mt ] || missing+=(zookeeper-bin)
command -v nc >/dev/null || missing+=(netcat-openbsd)
# The nemesis tests put ensemble members in network namespaces (ip netns).
command -v ip >/dev/null || missing+=(iproute2)
command -v java >/dev/null || missing+=(default-jre-headless)
# Curator's ensemble tracking (tests/compat/test_reconfig.py) runs as a Java source file: the
# source launcher needs a JDK.
command -v javac >/dev/null || missing+=(default-jdk-headless)
[ -r /usr/share/java/curator-framework.jar ] || missing+=(libcurator-framework-java)
[ -r /usr/share/java/curator-recipes.jar ] || missing+=(libcurator-recipes-java)
[ -r /usr/share/java/curator-x-discovery.jar ] || missing+=(libcurator-discovery-java)
[ -r /usr/share/java/slf4j-nop.jar ] || missing+=(libslf4j-java)
# ZooKeeper's TLS (NettyServerCnxnFactory) needs netty's codec and resolver jars, which its own
# classpath leaves out; the security tests make their certificates with openssl.
[ -r /usr/share/java/netty-codec.jar ] || missing+=(libnetty-java)
command -v openssl >/dev/null || missing+=(openssl)
# Kerberos: the server links MIT's GSSAPI (libgssapi's bindings are generated with libclang at
# build time); the tests run a throwaway KDC (tests/compat/kdc.sh) and kinit.
[ -r /usr/include/gssapi/gssapi.h ] || missing+=(libkrb5-dev)
ls /usr/lib/llvm-*/lib/clang/*/include/stddef.h >/dev/null 2>&1 || missing+=(libclang-dev)
command -v krb5kdc >/dev/null || [ -x /usr/sbin/krb5kdc ] || missing+=(krb5-kdc)
command -v kinit >/dev/null || missing+=(krb5-user)
# kdc.sh makes its principals with kadmin.local, which Debian 12's krb5-kdc may leave to
# krb5-admin-server.
command -v kadmin.local >/dev/null || [ -x /usr/sbin/kadmin.local ] || missing+=(krb5-admin-server)
command -v npm >/dev/null || missing+=(npm)
# The web console's tests drive Debian's Chromium headless through its ChromeDriver (Selenium).
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
# examples/patroni/run.sh (run by scripts/test.sh): Debian's Patroni, whose ZooKeeper DCS uses
# the system python3's kazoo (named here: patroni's own dependency may pick etcd's client), and
# PostgreSQL.
command -v patroni >/dev/null || missing+=(patroni)
/usr/bin/python3 -c 'import kazoo' 2>/dev/null || missing+=(python3-kazoo)
ls /usr/lib/postgresql/*/bin/pg_rewind >/dev/null 2>&1 || missing+=(postgresql)
command -v python3 >/dev/null || missing+=(python3)
# Debian's python3 makes venvs only with python3-venv (ensurepip) installed.
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    echo "apt-get install ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# pure-sasl and kerberos (built against libkrb5-dev): kazoo's SASL, DIGEST-MD5 and GSSAPI
# (tests/compat/test_security.py).
if ! "$venv/bin/python" -c 'import kazoo, pytest, prometheus_client, pexpect, puresasl, kerberos, selenium' 2>/dev/null; then
    "$venv/bin/pip" install -q kazoo pytest prometheus_client pexpect pure-sasl kerberos selenium
fi
