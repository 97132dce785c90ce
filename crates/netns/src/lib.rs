//! Network namespaces for partition ("nemesis") tests: a [`Network`] of hosts, each a network
//! namespace the test made, to run ensemble members in (see [`Network::command`]) and cut apart
//! (see [`Network::isolate`], [`Network::split`], [`Network::cut`]) while the test's clients, in
//! the root namespace, still reach every member.
//!
//! ```text
//!  root namespace (the test, its clients)            router namespace (crl-<pid>-<n>-net)
//!   crl<S>c<i> 10.213.S.4i+1                           h<i> 10.212.S.4i+1
//!        │ veth                                         │ veth
//!   client 10.213.S.4i+2 ── host i (crl-<pid>-<n>-<i>) ── peer 10.212.S.4i+2
//! ```
//!
//! Why it is shaped so:
//! - Peer traffic goes through a router namespace, not a bridge, and a cut is a policy-routing
//!   rule there (`ip rule add from A to B blackhole`). Any directed pair can be cut that way, as
//!   split brains and partial partitions need, without iptables, tc or a VLAN-filtering bridge
//!   (the test machine has none of them). The router drops silently, as a real partition does:
//!   hosts see no link change and get no error, so connections stall and connects time out.
//! - `ip link set down` is used only for [`Network::unplug`], a different failure: the router
//!   answers the others with ICMP unreachable (rate-limited, so some connects fail fast and some
//!   time out), and the host sees its link lose carrier. The host's own end is never set down:
//!   that flushes the host's route to the peers, which setting it up again does not bring back.
//! - Each host's client link goes straight to the root namespace and no cut touches it. Hosts have
//!   no default route, so members cannot reach one another through the root namespace.
//! - Root-namespace addresses must not clash between concurrent test processes, so each network
//!   takes a slot S (0..=255), held by an abstract Unix socket that the kernel releases when its
//!   process dies, and skips any slot whose names or addresses are still in the root namespace
//!   (left by a run that was killed). The router's addresses use S too, so logs say which run.
//! - Dropping the network, also while a test panics, kills what still runs in its namespaces
//!   and deletes exactly the namespaces and root-side links it made. A run killed with SIGKILL
//!   leaves them, and what ran in them, behind: `ip netns list` shows them by their
//!   `crl-<pid>-` names, and for each, `ip netns pids NAME | xargs -r kill -9; ip netns del NAME`
//!   removes it (its links go with it once nothing runs inside).
//!
//! Everything is done by running `ip` (iproute2) as root; [`unavailable`] says why it can't be.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::Ipv4Addr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// The second octet of the peer network: host i of slot S is 10.212.S.(4i+2).
const PEER_NET: u8 = 212;
/// The second octet of the client network: host i of slot S is 10.213.S.(4i+2).
const CLIENT_NET: u8 = 213;
/// Each host takes one /30 of its slot's /24 in each network.
pub const MAX_HOSTS: usize = 64;

/// Why this process cannot build networks (not root, no `ip netns`), or `None` if it can. Tests
/// skip with this message rather than fail.
pub fn unavailable() -> Option<String> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Some(format!("needs root, runs as uid {uid}")),
        None => return Some("cannot read the uid from /proc/self/status".into()),
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run `ip`: {e}")),
    }
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// Hosts joined by a peer network that can be cut, each also reachable from the root namespace
/// over a client link that is never cut. Dropping it removes everything it made.
pub struct Network {
    /// `crl-<pid>-<n>`: the prefix of every namespace name.
    run: String,
    slot: u8,
    hosts: usize,
    faults: Mutex<Faults>,
    /// Holds the slot; a field after the rest so it is released only once `drop` has cleaned up.
    _slot_lock: UnixListener,
}

/// What is currently broken: the directed pairs (from, to) whose packets the router drops, and
/// the hosts whose router-side link is down.
#[derive(Clone, Default)]
struct Faults {
    cuts: BTreeSet<(usize, usize)>,
    unplugged: BTreeSet<usize>,
}

impl Network {
    /// Builds `hosts` hosts (1..=[`MAX_HOSTS`]), all connected. On an error, whatever was
    /// already made is removed again.
    pub fn new(hosts: usize) -> io::Result<Network> {
        assert!(
            (1..=MAX_HOSTS).contains(&hosts),
            "a network has 1 to {MAX_HOSTS} hosts, not {hosts}"
        );
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (slot, lock) = claim_slot()?;
        let net = Network {
            run: format!("crl-{}-{n}", std::process::id()),
            slot,
            hosts,
            faults: Mutex::default(),
            _slot_lock: lock,
        };
        net.build()?;
        Ok(net)
    }

    pub fn hosts(&self) -> usize {
        self.hosts
    }

    /// The name of `host`'s namespace, for `ip netns exec` and `ip -n`.
    pub fn namespace(&self, host: usize) -> String {
        self.check(host);
        format!("{}-{host}", self.run)
    }

    /// Where `host` talks to the other hosts: a member's peer (quorum/election) address.
    pub fn peer_addr(&self, host: usize) -> Ipv4Addr {
        self.check(host);
        address(PEER_NET, self.slot, host, 2)
    }

    /// Where the test's clients, in the root namespace, reach `host`; no cut touches it.
    pub fn client_addr(&self, host: usize) -> Ipv4Addr {
        self.check(host);
        address(CLIENT_NET, self.slot, host, 2)
    }

    /// The root namespace's end of `host`'s client link: the source address the member sees
    /// the test's clients connect from, and the one root-namespace address it can reach.
    pub fn client_gateway(&self, host: usize) -> Ipv4Addr {
        self.check(host);
        address(CLIENT_NET, self.slot, host, 1)
    }

    /// A command running `program` inside `host`. `ip netns exec` enters the namespace and then
    /// execs the program in the same process, so the child's pid is the program's own: signals
    /// (SIGKILL, SIGSTOP) reach it directly.
    pub fn command(&self, host: usize, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(host)])
            .arg(program);
        command
    }

    /// Drops every packet between `a` and `b`, both ways; each still reaches the others.
    pub fn cut(&self, a: usize, b: usize) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Drops the packets from `from` to `to` only. TCP needs both ways, so connections between
    /// the two fail either way; what differs is which side's packets still arrive.
    pub fn cut_one_way(&self, from: usize, to: usize) {
        self.check(from);
        self.check(to);
        assert_ne!(from, to, "a host cannot be cut from itself");
        self.change(|f| {
            f.cuts.insert((from, to));
        });
    }

    /// Cuts `host` off from every other host, both ways.
    pub fn isolate(&self, host: usize) {
        self.check(host);
        let others: Vec<usize> = (0..self.hosts).filter(|&h| h != host).collect();
        self.change(|f| {
            for &other in &others {
                f.cuts.insert((host, other));
                f.cuts.insert((other, host));
            }
        });
    }

    /// Makes the peer network exactly `groups`: hosts talk within their group and not across
    /// groups; a host in no group talks to nobody. Replaces earlier cuts; unplugged hosts stay
    /// unplugged.
    pub fn split(&self, groups: &[&[usize]]) {
        for &host in groups.iter().copied().flatten() {
            self.check(host);
        }
        let cuts = split_cuts(self.hosts, groups);
        self.change(|f| f.cuts = cuts);
    }

    /// Restores everything of `host`'s: its cuts either way, and its link if unplugged.
    pub fn heal(&self, host: usize) {
        self.check(host);
        self.change(|f| {
            f.cuts.retain(|&(from, to)| from != host && to != host);
            f.unplugged.remove(&host);
        });
    }

    /// Restores the whole peer network.
    pub fn heal_all(&self) {
        self.change(|f| *f = Faults::default());
    }

    /// Sets `host`'s link down at the router, as if its cable were pulled, until it is healed.
    /// Unlike a cut this is visible: the host's link loses carrier, and the router answers the
    /// other hosts with ICMP unreachable.
    pub fn unplug(&self, host: usize) {
        self.check(host);
        self.change(|f| {
            f.unplugged.insert(host);
        });
    }

    fn check(&self, host: usize) {
        assert!(
            host < self.hosts,
            "host {host} of a {}-host network",
            self.hosts
        );
    }

    fn router(&self) -> String {
        format!("{}-net", self.run)
    }

    /// The router's end of `host`'s peer link: the host's gateway to the other hosts.
    fn router_addr(&self, host: usize) -> Ipv4Addr {
        address(PEER_NET, self.slot, host, 1)
    }

    /// The root-namespace end of `host`'s client link, named by slot: interface names are
    /// at most 15 bytes, too short for the pid.
    fn client_link(&self, host: usize) -> String {
        format!("crl{}c{host}", self.slot)
    }

    fn build(&self) -> io::Result<()> {
        // One `ip -batch` per namespace: a few processes rather than several per host.
        let mut root = format!("netns add {}\n", self.router());
        let mut router = String::from("link set lo up\n");
        for h in 0..self.hosts {
            let (ns, link) = (self.namespace(h), self.client_link(h));
            let gateway = self.client_gateway(h);
            let _ = write!(
                root,
                "netns add {ns}\n\
                 link add name {link} type veth peer name client netns {ns}\n\
                 addr add {gateway}/30 dev {link}\n\
                 link set {link} up\n"
            );
            let _ = write!(
                router,
                "link add name h{h} type veth peer name peer netns {ns}\n\
                 addr add {}/30 dev h{h}\n\
                 link set h{h} up\n",
                self.router_addr(h)
            );
        }
        ip_batch(None, &[], &root)?;
        ip_batch(Some(&self.router()), &[], &router)?;
        // A new namespace does not forward; forwarding is the router's one job.
        let forward = "echo 1 > /proc/sys/net/ipv4/ip_forward";
        run(Command::new("ip").args(["netns", "exec", &self.router(), "sh", "-c", forward]))?;
        for h in 0..self.hosts {
            ip_batch(Some(&self.namespace(h)), &[], &self.host_script(h))?;
        }
        Ok(())
    }

    fn host_script(&self, h: usize) -> String {
        let peer = self.peer_addr(h);
        let router = self.router_addr(h);
        let client = self.client_addr(h);
        let peers = Ipv4Addr::new(10, PEER_NET, self.slot, 0);
        format!(
            "link set lo up\n\
             addr add {peer}/30 dev peer\n\
             link set peer up\n\
             route add {peers}/24 via {router}\n\
             addr add {client}/30 dev client\n\
             link set client up\n"
        )
    }

    /// Applies `edit` to the faults: the router gets the difference, in one `ip -batch`.
    /// Panics if `ip` fails, as the test could not go on meaningfully.
    fn change(&self, edit: impl FnOnce(&mut Faults)) {
        let mut faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        let mut wanted = faults.clone();
        edit(&mut wanted);
        let script = self.router_script(&faults, &wanted);
        if !script.is_empty() {
            if let Err(e) = ip_batch(Some(&self.router()), &[], &script) {
                panic!("changing network {}: {e}", self.run);
            }
        }
        *faults = wanted;
    }

    fn router_script(&self, old: &Faults, new: &Faults) -> String {
        let mut script = String::new();
        for &(from, to) in old.cuts.difference(&new.cuts) {
            let _ = writeln!(script, "rule del pref {}", rule_pref(from, to));
        }
        for &(from, to) in new.cuts.difference(&old.cuts) {
            // blackhole, not unreachable or prohibit: those would answer with ICMP errors.
            let _ = writeln!(
                script,
                "rule add from {} to {} blackhole pref {}",
                self.peer_addr(from),
                self.peer_addr(to),
                rule_pref(from, to)
            );
        }
        for h in old.unplugged.difference(&new.unplugged) {
            let _ = writeln!(script, "link set h{h} up");
        }
        for h in new.unplugged.difference(&old.unplugged) {
            let _ = writeln!(script, "link set h{h} down");
        }
        script
    }

    /// SIGKILLs whatever still runs in the network's namespaces: a member left running would
    /// keep its namespace alive after `ip netns del`, and the test's output pipe open.
    fn kill_processes(&self) {
        let namespaces = (0..self.hosts)
            .map(|h| self.namespace(h))
            .chain([self.router()]);
        // One `ip` per namespace, so one that a failed build never made hides no pids.
        let mut pids = Vec::new();
        for ns in namespaces {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                let listed = String::from_utf8_lossy(&out.stdout);
                pids.extend(listed.split_whitespace().map(String::from));
            }
        }
        if !pids.is_empty() {
            // The shell's kill, which is there wherever `sh` is.
            let mut kill = Command::new("sh");
            kill.args(["-c", "kill -KILL \"$@\"", "kill"]).args(&pids);
            let _ = run(&mut kill);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.kill_processes();
        // Deleting the root-side link deletes its pair too, even in a namespace that lingers.
        let mut script = String::new();
        for h in 0..self.hosts {
            let _ = writeln!(script, "link del {}", self.client_link(h));
            let _ = writeln!(script, "netns del {}", self.namespace(h));
        }
        let _ = writeln!(script, "netns del {}", self.router());
        // -force: carry on past anything a failed build never made.
        if let Err(e) = ip_batch(None, &["-force"], &script) {
            eprintln!("netns: removing network {}: {e}", self.run);
        }
    }
}

/// 10.`net`.`slot`.(4·host + `end`): host `host`'s /30, `end` 1 for the far side, 2 for the host.
fn address(net: u8, slot: u8, host: usize, end: u8) -> Ipv4Addr {
    let base = u8::try_from(4 * host).expect("host index below MAX_HOSTS");
    Ipv4Addr::new(10, net, slot, base + end)
}

/// The `ip rule` preference of the cut from `from` to `to`: one per directed pair, so a cut is
/// deleted by its preference alone.
fn rule_pref(from: usize, to: usize) -> usize {
    1000 + from * MAX_HOSTS + to
}

/// Every directed pair of hosts not in the same group.
fn split_cuts(hosts: usize, groups: &[&[usize]]) -> BTreeSet<(usize, usize)> {
    let mut group_of = vec![None; hosts];
    for (g, group) in groups.iter().enumerate() {
        for &host in group.iter() {
            assert!(group_of[host].is_none(), "host {host} is in two groups");
            group_of[host] = Some(g);
        }
    }
    let apart = |a: usize, b: usize| group_of[a].is_none() || group_of[a] != group_of[b];
    (0..hosts)
        .flat_map(|a| (0..hosts).map(move |b| (a, b)))
        .filter(|&(a, b)| a != b && apart(a, b))
        .collect()
}

/// Takes the first slot that no live process holds and nothing in the root namespace uses.
fn claim_slot() -> io::Result<(u8, UnixListener)> {
    for slot in 0..=u8::MAX {
        let name = SocketAddr::from_abstract_name(format!("corral-netns-slot-{slot}"))?;
        let lock = match UnixListener::bind_addr(&name) {
            Ok(lock) => lock,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        };
        if !slot_in_use(slot)? {
            return Ok((slot, lock));
        }
        eprintln!(
            "netns: slot {slot}'s links or addresses (crl{slot}c*, 10.{CLIENT_NET}.{slot}.*) are \
             in the root namespace without a live owner, left by a killed run; skipping it"
        );
    }
    Err(io::Error::other("all 256 network slots are in use"))
}

/// Whether a link or an address of `slot`'s client network is in the root namespace.
fn slot_in_use(slot: u8) -> io::Result<bool> {
    let shown = ip_batch(None, &["-oneline"], "link show\naddr show\n")?;
    let link = format!("crl{slot}c");
    let net = format!("10.{CLIENT_NET}.{slot}.");
    let is_ours = |word: &str| {
        word.starts_with(&net)
            || word
                .strip_prefix(&link)
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    };
    Ok(shown.split_whitespace().any(is_ours))
}

/// Runs `ip [-n netns] flags -batch -` on `script` (one `ip` command a line) and returns what it
/// printed. Without `-force`, `ip` stops at the first failing line and names it.
fn ip_batch(netns: Option<&str>, flags: &[&str], script: &str) -> io::Result<String> {
    let mut ip = Command::new("ip");
    if let Some(netns) = netns {
        ip.args(["-n", netns]);
    }
    ip.args(flags).args(["-batch", "-"]);
    let mut child = ip
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Written whole, then closed: the replies are small, so `ip` cannot block on its output.
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(io::Error::other(format!(
        "{ip:?} failed: {}\non:\n{script}",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

fn run(command: &mut Command) -> io::Result<()> {
    let out = command.output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{ChildStdin, ChildStdout};
    use std::time::{Duration, Instant};

    /// A helper process, SIGKILLed when dropped so a failing test leaves none behind.
    struct KillOnDrop(std::process::Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// The port the helpers' echo servers listen on, in every host.
    const PORT: u16 = 7000;
    /// Long enough for a connect on this machine, short enough to wait out for a cut one.
    const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
    const HELPER_TASK: &str = "CORRAL_NETNS_HELPER";

    /// A network for a test, or `None` (with the reason printed) where none can be built.
    fn network(hosts: usize) -> Option<Network> {
        if let Some(why) = unavailable() {
            eprintln!("netns test skipped: {why}");
            return None;
        }
        Some(Network::new(hosts).expect("the network builds"))
    }

    fn all_pairs(hosts: usize) -> BTreeSet<(usize, usize)> {
        let pairs = (0..hosts).flat_map(|a| (0..hosts).map(move |b| (a, b)));
        pairs.filter(|&(a, b)| a != b).collect()
    }

    #[test]
    fn split_cuts_every_pair_across_groups_and_isolates_the_unlisted() {
        let mut across = all_pairs(4);
        across.retain(|p| !matches!(p, (0, 1) | (1, 0)));
        assert_eq!(split_cuts(4, &[&[0, 1], &[2]]), across);
        assert!(split_cuts(3, &[&[0, 1, 2]]).is_empty());
        assert_eq!(split_cuts(3, &[]), all_pairs(3));
    }

    #[test]
    #[should_panic(expected = "in two groups")]
    fn split_refuses_a_host_in_two_groups() {
        split_cuts(3, &[&[0, 1], &[1, 2]]);
    }

    #[test]
    fn addresses_and_rules_fit_their_ranges() {
        assert_eq!(address(PEER_NET, 7, 0, 2), Ipv4Addr::new(10, 212, 7, 2));
        assert_eq!(
            address(CLIENT_NET, 7, 63, 1),
            Ipv4Addr::new(10, 213, 7, 253)
        );
        // Cuts must come before the main table's rule, at 32766.
        assert!(rule_pref(MAX_HOSTS - 1, MAX_HOSTS - 1) < 32766);
    }

    /// Not a test: the program the other tests run inside hosts (the machine has no `nc`), by
    /// running this test binary again with CORRAL_NETNS_HELPER set. Ignored, so runs skip it.
    #[test]
    #[ignore]
    fn helper() {
        let Ok(task) = std::env::var(HELPER_TASK) else {
            return;
        };
        match task.split_whitespace().collect::<Vec<_>>()[..] {
            ["echo", addr] => echo_server(addr),
            ["connect", addr] => println!("helper: {}", try_echo(addr)),
            ["session", addr] => session(addr),
            _ => panic!("unknown helper task {task:?}"),
        }
    }

    fn echo_server(addr: &str) {
        let listener = TcpListener::bind(addr).expect("the echo server binds");
        println!("helper: ready");
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let (mut from, mut to) = (&stream, &stream);
                let _ = io::copy(&mut from, &mut to);
            });
        }
    }

    /// Connects, sends a byte and reads it back: "connected", or "failed" with the error kind.
    fn try_echo(addr: &str) -> String {
        let attempt = || -> io::Result<()> {
            let mut stream = TcpStream::connect_timeout(&addr.parse().unwrap(), CONNECT_TIMEOUT)?;
            stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
            stream.write_all(b"x")?;
            stream.read_exact(&mut [0])
        };
        match attempt() {
            Ok(()) => "connected".into(),
            Err(e) => format!("failed {:?}", e.kind()),
        }
    }

    /// Holds one connection open; for every line on stdin, sends a byte and says what came back.
    fn session(addr: &str) {
        let mut stream = TcpStream::connect_timeout(&addr.parse().unwrap(), CONNECT_TIMEOUT)
            .expect("the session connects");
        stream
            .set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        println!("helper: connected");
        for _ in io::stdin().lines().map_while(Result::ok) {
            let outcome = match stream.write_all(b"x") {
                Err(e) => format!("error {:?}", e.kind()),
                Ok(()) => match stream.read(&mut [0; 64]) {
                    Ok(0) => "closed".into(),
                    Ok(_) => "echo".into(),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => "stalled".into(),
                    Err(e) => format!("error {:?}", e.kind()),
                },
            };
            println!("helper: {outcome}");
        }
    }

    /// A helper running in a host, and its stdin and stdout.
    struct Helper {
        input: ChildStdin,
        output: BufReader<ChildStdout>,
        _process: KillOnDrop,
    }

    impl Helper {
        fn start(net: &Network, host: usize, task: &str) -> Helper {
            let exe = std::env::current_exe().unwrap();
            let mut child = net
                .command(host, exe)
                .args(["--exact", "tests::helper", "--ignored", "--nocapture"])
                .env(HELPER_TASK, task)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("the helper starts");
            Helper {
                input: child.stdin.take().unwrap(),
                output: BufReader::new(child.stdout.take().unwrap()),
                _process: KillOnDrop(child),
            }
        }

        /// The helper's next line of its own, skipping the test harness's.
        fn hear(&mut self) -> String {
            let mut line = String::new();
            loop {
                line.clear();
                let n = self.output.read_line(&mut line).unwrap();
                assert!(n > 0, "the helper ended without answering");
                if let Some(said) = line.trim_end().strip_prefix("helper: ") {
                    return said.to_string();
                }
            }
        }

        fn ask(&mut self) -> String {
            writeln!(self.input, "ping").unwrap();
            self.hear()
        }
    }

    fn peer(net: &Network, host: usize) -> String {
        format!("{}:{PORT}", net.peer_addr(host))
    }

    /// Whether `from` can open a connection to `to`'s echo server over the peer network.
    fn reaches(net: &Network, from: usize, to: usize) -> bool {
        let outcome = Helper::start(net, from, &format!("connect {}", peer(net, to))).hear();
        outcome == "connected"
    }

    fn client_reaches(net: &Network, host: usize) -> bool {
        let addr = SocketAddr::from((net.client_addr(host), PORT));
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok()
    }

    /// Which ordered pairs of hosts can connect over the peer network, e.g. "01 02 10 20".
    fn reachable_pairs(net: &Network) -> String {
        let pairs = (0..net.hosts()).flat_map(|a| (0..net.hosts()).map(move |b| (a, b)));
        pairs
            .filter(|&(a, b)| a != b && reaches(net, a, b))
            .map(|(a, b)| format!("{a}{b}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn cuts_stop_peer_traffic_but_never_client_traffic() {
        let Some(net) = network(3) else { return };
        let echo = (0..3).map(|h| {
            let mut helper = Helper::start(&net, h, &format!("echo 0.0.0.0:{PORT}"));
            assert_eq!(helper.hear(), "ready");
            helper
        });
        let _echo: Vec<Helper> = echo.collect();
        let everyone = "01 02 10 12 20 21";
        assert_eq!(reachable_pairs(&net), everyone);
        assert!((0..3).all(|h| client_reaches(&net, h)));
        // Members cannot reach each other through the client network.
        let via_client = format!("connect {}:{PORT}", net.client_addr(1));
        assert!(Helper::start(&net, 0, &via_client)
            .hear()
            .starts_with("failed"));

        let mut session = Helper::start(&net, 0, &format!("session {}", peer(&net, 1)));
        assert_eq!(session.hear(), "connected");
        assert_eq!(session.ask(), "echo");

        net.isolate(1);
        assert_eq!(reachable_pairs(&net), "02 20");
        assert!((0..3).all(|h| client_reaches(&net, h)));
        // An open connection stalls: no error, no reset, nothing arrives.
        assert_eq!(session.ask(), "stalled");

        net.heal(1);
        assert_eq!(reachable_pairs(&net), everyone);
        // The stalled connection resumes at the sender's next retransmission.
        let deadline = Instant::now() + Duration::from_secs(10);
        while session.ask() != "echo" {
            assert!(Instant::now() < deadline, "the connection stays stalled");
        }

        net.split(&[&[0, 1], &[2]]);
        assert_eq!(reachable_pairs(&net), "01 10");
        net.heal_all();
        net.cut(0, 1);
        assert_eq!(reachable_pairs(&net), "02 12 20 21");
        net.heal_all();
        // One way cut is both ways cut for TCP: 1's handshake replies to 0 are dropped.
        net.cut_one_way(0, 1);
        assert_eq!(reachable_pairs(&net), "02 12 20 21");
        net.heal_all();
        net.unplug(2);
        assert_eq!(reachable_pairs(&net), "01 10");
        assert!(client_reaches(&net, 2));
        net.heal_all();
        assert_eq!(reachable_pairs(&net), everyone);
    }

    #[test]
    fn commands_run_in_place_and_die_with_the_network() {
        let Some(net) = network(1) else { return };
        let mut sleep = net.command(0, "sleep").arg("30").spawn().unwrap();
        let pid = sleep.id();
        // The pid is `ip`'s until it has entered the namespace and exec'd `sleep`.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap() != "sleep\n" {
            assert!(Instant::now() < deadline, "`ip netns exec` did not exec");
            std::thread::sleep(Duration::from_millis(5));
        }
        let netns_inode = |path: String| std::fs::metadata(path).unwrap().ino();
        assert_eq!(
            netns_inode(format!("/proc/{pid}/ns/net")),
            netns_inode(format!("/run/netns/{}", net.namespace(0)))
        );
        drop(net);
        assert_eq!(sleep.wait().unwrap().signal(), Some(9));
    }

    /// The names a network made: its namespaces and its root-side links.
    fn names(net: &Network) -> Vec<String> {
        let hosts = 0..net.hosts();
        let namespaces = hosts.clone().map(|h| net.namespace(h));
        let links = hosts.map(|h| net.client_link(h));
        namespaces.chain([net.router()]).chain(links).collect()
    }

    /// Of `names`, those still in `ip netns list` or `ip link`.
    fn still_there(names: &[String]) -> Vec<String> {
        let shown = ip_batch(None, &["-oneline"], "netns list\nlink show\n").unwrap();
        let words: BTreeSet<&str> = shown
            .split(|c: char| c.is_whitespace() || c == '@' || c == ':')
            .collect();
        names
            .iter()
            .filter(|n| words.contains(n.as_str()))
            .cloned()
            .collect()
    }

    #[test]
    fn networks_get_their_own_names_and_leave_nothing_behind() {
        let Some(a) = network(3) else { return };
        let b = Network::new(2).unwrap();
        assert_ne!(a.slot, b.slot);
        assert_ne!(a.namespace(0), b.namespace(0));
        let made: Vec<String> = names(&a).into_iter().chain(names(&b)).collect();
        assert_eq!(still_there(&made), made);
        drop((a, b));
        assert_eq!(still_there(&made), Vec::<String>::new());

        let mut made = Vec::new();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let net = Network::new(2).unwrap();
            made = names(&net);
            panic!("the test fails");
        }));
        assert!(panicked.is_err());
        assert_eq!(still_there(&made), Vec::<String>::new());
    }

    /// How long building and removing networks takes (shown with --nocapture).
    #[test]
    fn setup_and_teardown_times() {
        if network(1).is_none() {
            return;
        }
        for hosts in [3, 5] {
            let start = Instant::now();
            let net = Network::new(hosts).unwrap();
            let built = start.elapsed();
            net.isolate(0);
            net.heal_all();
            let changed = start.elapsed() - built;
            drop(net);
            let removed = start.elapsed() - built - changed;
            eprintln!(
                "netns: {hosts} hosts built in {built:?}, isolated and healed in {changed:?}, \
                 removed in {removed:?}"
            );
        }
    }
}
