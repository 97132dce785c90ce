"""Network namespaces for bench/compare's partition phase: a member per namespace, cut apart.

The same topology as the nemesis tests' `corral_testkit::netns` (read its module comment for
why it is shaped so): every host is a namespace with a peer link to a router namespace, where a
cut is a `blackhole` policy rule (packets dropped silently, as in a real partition), and a
client link to the root namespace that no cut touches, so the benchmark's clients reach a member
that its peers cannot. Needs root and iproute2. Names start with `crlb-<pid>-` and the addresses
are 10.216.S.x (peers) and 10.217.S.x (clients), apart from the tests' own.
"""

import os
import subprocess

PEER_NET, CLIENT_NET = 216, 217


def unavailable():
    """Why no network can be built here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        return f"`ip netns` does not work: {e}"
    return None


def ip_batch(script, netns=None):
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    subprocess.run(cmd, input=script, text=True, check=True, capture_output=True)


class Network:
    """`hosts` namespaces joined by a cuttable peer network; `close()` removes all of it."""

    def __init__(self, hosts):
        self.hosts = hosts
        self.run = f"crlb-{os.getpid()}"
        self.slot = os.getpid() % 250
        self.cuts = set()
        root = f"netns add {self.router}\n"
        router = "link set lo up\n"
        for h in range(hosts):
            root += (f"netns add {self.namespace(h)}\n"
                     f"link add name crlb{self.slot}c{h} type veth peer name client netns {self.namespace(h)}\n"
                     f"addr add {self.addr(CLIENT_NET, h, 1)}/30 dev crlb{self.slot}c{h}\n"
                     f"link set crlb{self.slot}c{h} up\n")
            router += (f"link add name h{h} type veth peer name peer netns {self.namespace(h)}\n"
                       f"addr add {self.addr(PEER_NET, h, 1)}/30 dev h{h}\n"
                       f"link set h{h} up\n")
        try:
            ip_batch(root)
            ip_batch(router, self.router)
            subprocess.run(["ip", "netns", "exec", self.router, "sh", "-c",
                            "echo 1 > /proc/sys/net/ipv4/ip_forward"], check=True)
            for h in range(hosts):
                ip_batch(f"link set lo up\n"
                         f"addr add {self.peer_addr(h)}/30 dev peer\nlink set peer up\n"
                         f"route add 10.{PEER_NET}.{self.slot}.0/24 via {self.addr(PEER_NET, h, 1)}\n"
                         f"addr add {self.client_addr(h)}/30 dev client\nlink set client up\n",
                         self.namespace(h))
        except Exception:
            self.close()
            raise

    @property
    def router(self):
        return f"{self.run}-net"

    def namespace(self, h):
        return f"{self.run}-{h}"

    def addr(self, net, h, end):
        return f"10.{net}.{self.slot}.{4 * h + end}"

    def peer_addr(self, h):
        return self.addr(PEER_NET, h, 2)

    def client_addr(self, h):
        return self.addr(CLIENT_NET, h, 2)

    def command(self, h, argv):
        """`argv` run inside host h (ip netns exec execs it: the pid is the program's)."""
        return ["ip", "netns", "exec", self.namespace(h)] + argv

    def isolate(self, h):
        for other in range(self.hosts):
            if other != h:
                self.cuts |= {(h, other), (other, h)}
        self._apply()

    def heal_all(self):
        old, self.cuts = self.cuts, set()
        self._apply(removed=old)

    def _apply(self, removed=()):
        script = "".join(f"rule del pref {self._pref(a, b)}\n" for a, b in removed)
        script += "".join(
            f"rule add from {self.peer_addr(a)} to {self.peer_addr(b)} blackhole pref {self._pref(a, b)}\n"
            for a, b in self.cuts)
        if script:
            ip_batch(script, self.router)

    def _pref(self, a, b):
        return 1000 + a * 64 + b

    def close(self):
        """Kills what runs in the namespaces and deletes them and the root-side links."""
        for name in [self.namespace(h) for h in range(self.hosts)] + [self.router]:
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        for h in range(self.hosts):
            subprocess.run(["ip", "link", "del", f"crlb{self.slot}c{h}"], capture_output=True)
