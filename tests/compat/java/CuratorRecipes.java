// Apache Curator 5.4's recipes (Debian's libcurator-recipes-java and libcurator-discovery-java)
// against a live server or ensemble, each recipe a named check with its own assertions. Run by
// tests/compat/test_curator.py with Java's source launcher:
//
//   java -cp CLASSPATH CuratorRecipes.java HOST:PORT[,HOST:PORT...] [CHECK...]
//
// Client i of the checks connects to the i-th address alone (modulo their number), so against an
// ensemble the clients that contend, watch and read each other's writes sit on different members.
// Prints one line per check, "PASS name" or "FAIL name: reason", and exits 1 if any failed. Every
// wait is bounded (a check fails after CHECK_SECONDS); all nodes live under a path unique to the
// run, removed at the end.
import static java.nio.charset.StandardCharsets.UTF_8;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.UUID;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.Callable;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;
import java.util.stream.Collectors;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.api.transaction.CuratorOp;
import org.apache.curator.framework.api.transaction.CuratorTransactionResult;
import org.apache.curator.framework.api.transaction.OperationType;
import org.apache.curator.framework.recipes.atomic.AtomicValue;
import org.apache.curator.framework.recipes.atomic.DistributedAtomicLong;
import org.apache.curator.framework.recipes.barriers.DistributedBarrier;
import org.apache.curator.framework.recipes.barriers.DistributedDoubleBarrier;
import org.apache.curator.framework.recipes.cache.ChildData;
import org.apache.curator.framework.recipes.cache.CuratorCache;
import org.apache.curator.framework.recipes.cache.CuratorCacheListener;
import org.apache.curator.framework.recipes.cache.PathChildrenCache;
import org.apache.curator.framework.recipes.cache.TreeCache;
import org.apache.curator.framework.recipes.leader.LeaderLatch;
import org.apache.curator.framework.recipes.leader.LeaderLatchListener;
import org.apache.curator.framework.recipes.leader.LeaderSelector;
import org.apache.curator.framework.recipes.leader.LeaderSelectorListenerAdapter;
import org.apache.curator.framework.recipes.leader.Participant;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.framework.recipes.locks.InterProcessReadWriteLock;
import org.apache.curator.framework.recipes.locks.InterProcessSemaphoreV2;
import org.apache.curator.framework.recipes.locks.Lease;
import org.apache.curator.framework.recipes.nodes.PersistentNode;
import org.apache.curator.framework.recipes.queue.DistributedPriorityQueue;
import org.apache.curator.framework.recipes.queue.DistributedQueue;
import org.apache.curator.framework.recipes.queue.QueueBuilder;
import org.apache.curator.framework.recipes.queue.QueueConsumer;
import org.apache.curator.framework.recipes.queue.QueueSerializer;
import org.apache.curator.framework.recipes.queue.SimpleDistributedQueue;
import org.apache.curator.framework.recipes.shared.SharedCount;
import org.apache.curator.framework.recipes.shared.SharedCountListener;
import org.apache.curator.framework.recipes.shared.SharedCountReader;
import org.apache.curator.framework.recipes.shared.VersionedValue;
import org.apache.curator.framework.recipes.watch.PersistentWatcher;
import org.apache.curator.framework.state.ConnectionState;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.curator.retry.RetryNTimes;
import org.apache.curator.x.discovery.ServiceCache;
import org.apache.curator.x.discovery.ServiceDiscovery;
import org.apache.curator.x.discovery.ServiceDiscoveryBuilder;
import org.apache.curator.x.discovery.ServiceInstance;
import org.apache.curator.x.discovery.details.ServiceCacheListener;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.OpResult;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.data.Stat;

public class CuratorRecipes {
    /** How long one check may take, all its waits included. */
    static final int CHECK_SECONDS = 30;
    /** The bound on a single wait for something that must happen. */
    static final int WAIT_SECONDS = 10;
    /** How long something that must not happen is given to happen anyway. */
    static final int QUIET_MS = 300;

    interface Check {
        void run() throws Exception;
    }

    static String[] hosts;
    static String base;
    static CuratorFramework a, b, c;
    static final ExecutorService pool = Executors.newCachedThreadPool(r -> {
        Thread t = new Thread(r);
        t.setDaemon(true);
        return t;
    });

    public static void main(String[] args) throws Exception {
        hosts = args[0].split(",");
        Set<String> only = new HashSet<>(Arrays.asList(args).subList(1, args.length));
        base = "/curator-compat-" + UUID.randomUUID();
        a = client(0);
        b = client(1);
        c = client(2);
        a.create().forPath(base);

        Map<String, Check> checks = new LinkedHashMap<>();
        checks.put("transaction_commit", CuratorRecipes::transactionCommit);
        checks.put("transaction_rollback", CuratorRecipes::transactionRollback);
        checks.put("mutex_exclusion", CuratorRecipes::mutexExclusion);
        checks.put("mutex_reentrant", CuratorRecipes::mutexReentrant);
        checks.put("semaphore_v2", CuratorRecipes::semaphore);
        checks.put("read_write_lock", CuratorRecipes::readWriteLock);
        checks.put("leader_latch", CuratorRecipes::leaderLatch);
        checks.put("leader_selector", CuratorRecipes::leaderSelector);
        checks.put("distributed_queue", CuratorRecipes::distributedQueue);
        checks.put("distributed_priority_queue", CuratorRecipes::priorityQueue);
        checks.put("simple_distributed_queue", CuratorRecipes::simpleQueue);
        checks.put("distributed_barrier", CuratorRecipes::barrier);
        checks.put("distributed_double_barrier", CuratorRecipes::doubleBarrier);
        checks.put("curator_cache", CuratorRecipes::curatorCache);
        checks.put("path_children_cache", CuratorRecipes::pathChildrenCache);
        checks.put("tree_cache", CuratorRecipes::treeCache);
        checks.put("shared_count", CuratorRecipes::sharedCount);
        checks.put("distributed_atomic_long", CuratorRecipes::atomicLong);
        checks.put("persistent_node", CuratorRecipes::persistentNode);
        checks.put("persistent_watcher_recursive", CuratorRecipes::persistentWatcherRecursive);
        checks.put("persistent_watcher", CuratorRecipes::persistentWatcher);
        checks.put("service_discovery", CuratorRecipes::serviceDiscovery);

        int failed = 0;
        for (Map.Entry<String, Check> entry : checks.entrySet()) {
            if (!only.isEmpty() && !only.contains(entry.getKey())) {
                continue;
            }
            String failure = run(entry.getValue());
            if (failure == null) {
                System.out.println("PASS " + entry.getKey());
            } else {
                failed++;
                System.out.println("FAIL " + entry.getKey() + ": " + failure);
            }
            System.out.flush();
        }
        try {
            a.delete().deletingChildrenIfNeeded().forPath(base);
        } catch (Exception e) {
            // Ephemeral nodes of sessions still closing; the server is thrown away anyway.
        }
        a.close();
        b.close();
        c.close();
        System.exit(failed == 0 ? 0 : 1);
    }

    /** Runs one check under its deadline; null if it passed, else why not (on one line). */
    static String run(Check check) {
        Future<?> f = pool.submit(() -> {
            check.run();
            return null;
        });
        try {
            f.get(CHECK_SECONDS, TimeUnit.SECONDS);
            return null;
        } catch (TimeoutException e) {
            f.cancel(true);
            return "did not finish within " + CHECK_SECONDS + " s";
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            String why = cause instanceof AssertionError ? String.valueOf(cause.getMessage())
                    : cause.toString();
            return why.replace('\n', ' ');
        } catch (InterruptedException e) {
            return "interrupted";
        }
    }

    static CuratorFramework client(int i) throws Exception {
        CuratorFramework client = CuratorFrameworkFactory.builder()
                .connectString(hosts[i % hosts.length])
                .sessionTimeoutMs(10_000)
                .connectionTimeoutMs(10_000)
                .retryPolicy(new ExponentialBackoffRetry(100, 6))
                // Stay on the member given (an ensemble's /zookeeper/config names no client ports).
                .ensembleTracker(false)
                .build();
        client.start();
        if (!client.blockUntilConnected(WAIT_SECONDS, TimeUnit.SECONDS)) {
            throw new IllegalStateException("client " + i + " not connected to " + hosts[i % hosts.length]);
        }
        return client;
    }

    // ---------------------------------------------------------------- assertions and waits

    static void require(boolean condition, String what) {
        if (!condition) {
            throw new AssertionError(what);
        }
    }

    static void expect(Object expected, Object actual, String what) {
        if (expected == null ? actual != null : !expected.equals(actual)) {
            throw new AssertionError(what + ": expected " + expected + ", got " + actual);
        }
    }

    /** The next item, which must come within WAIT_SECONDS. */
    static <T> T next(BlockingQueue<T> q, String what) throws InterruptedException {
        T item = q.poll(WAIT_SECONDS, TimeUnit.SECONDS);
        if (item == null) {
            throw new AssertionError("no " + what + " within " + WAIT_SECONDS + " s");
        }
        return item;
    }

    static <T> void expectNext(BlockingQueue<T> q, T expected, String what) throws InterruptedException {
        expect(expected, next(q, what + " (expected " + expected + ")"), what);
    }

    /** Nothing more arrives within QUIET_MS. */
    static <T> void expectQuiet(BlockingQueue<T> q, String what) throws InterruptedException {
        T item = q.poll(QUIET_MS, TimeUnit.MILLISECONDS);
        if (item != null) {
            throw new AssertionError("unexpected " + what + ": " + item);
        }
    }

    /** For states no recipe announces: re-checked every 20 ms, for at most WAIT_SECONDS. */
    static void eventually(String what, BooleanSupplier condition) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(WAIT_SECONDS);
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("not within " + WAIT_SECONDS + " s: " + what);
            }
            Thread.sleep(20);
        }
    }

    interface Probe {
        boolean test() throws Exception;
    }

    static BooleanSupplier probe(Probe p) {
        return () -> {
            try {
                return p.test();
            } catch (Exception e) {
                throw new AssertionError(e);
            }
        };
    }

    /** Brings client's member up to date with the leader (ZooKeeper's sync), so that what
     * another client wrote before is visible to the reads that follow. */
    static void sync(CuratorFramework client, String path) throws Exception {
        CountDownLatch done = new CountDownLatch(1);
        AtomicInteger rc = new AtomicInteger(Integer.MIN_VALUE);
        client.sync().inBackground((cl, event) -> {
            rc.set(event.getResultCode());
            done.countDown();
        }).forPath(path);
        require(done.await(WAIT_SECONDS, TimeUnit.SECONDS), "sync " + path + " unanswered");
        expect(0, rc.get(), "sync " + path + " result code");
    }

    /** Runs the tasks at once on their own threads; rethrows the first failure. */
    @SafeVarargs
    static <T> List<T> concurrently(Callable<T>... tasks) throws Exception {
        List<Future<T>> futures = new ArrayList<>();
        for (Callable<T> task : tasks) {
            futures.add(pool.submit(task));
        }
        List<T> results = new ArrayList<>();
        for (Future<T> f : futures) {
            try {
                results.add(f.get(CHECK_SECONDS, TimeUnit.SECONDS));
            } catch (ExecutionException e) {
                if (e.getCause() instanceof Exception) {
                    throw (Exception) e.getCause();
                }
                throw new AssertionError(e.getCause());
            }
        }
        return results;
    }

    static byte[] bytes(String s) {
        return s.getBytes(UTF_8);
    }

    static String str(byte[] data) {
        return data == null ? null : new String(data, UTF_8);
    }

    static String path(String name) {
        return base + "/" + name;
    }

    static String data(CuratorFramework client, String path) throws Exception {
        return str(client.getData().forPath(path));
    }

    static final QueueSerializer<String> STRINGS = new QueueSerializer<String>() {
        public byte[] serialize(String item) {
            return bytes(item);
        }

        public String deserialize(byte[] bytes) {
            return str(bytes);
        }
    };

    // ---------------------------------------------------------------- transactions

    static void transactionCommit() throws Exception {
        String tx = path("tx");
        List<CuratorOp> ops = List.of(
                a.transactionOp().create().forPath(tx, bytes("t")),
                a.transactionOp().create().forPath(tx + "/x", bytes("1")),
                a.transactionOp().create().withMode(CreateMode.PERSISTENT_SEQUENTIAL).forPath(tx + "/seq-", bytes("s")),
                a.transactionOp().setData().forPath(tx + "/x", bytes("2")),
                a.transactionOp().check().withVersion(1).forPath(tx + "/x"));
        List<CuratorTransactionResult> results = a.transaction().forOperations(ops);
        expect(5, results.size(), "result count");
        expect(List.of(OperationType.CREATE, OperationType.CREATE, OperationType.CREATE, OperationType.SET_DATA,
                        OperationType.CHECK),
                results.stream().map(CuratorTransactionResult::getType).collect(Collectors.toList()), "result types");
        expect(tx, results.get(0).getResultPath(), "create result path");
        // The sequence number is the parent's child-version: one child (x) was made before.
        expect(tx + "/seq-0000000001", results.get(2).getResultPath(), "sequential create result path");
        expect(1, results.get(3).getResultStat().getVersion(), "setData result version");
        sync(b, tx);
        expect("2", data(b, tx + "/x"), "x's data seen by another client");
        expect(List.of("seq-0000000001", "x"), sorted(b.getChildren().forPath(tx)), "children made");
        Stat t = b.checkExists().forPath(tx);
        Stat x = b.checkExists().forPath(tx + "/x");
        Stat s = b.checkExists().forPath(tx + "/seq-0000000001");
        // One transaction, one zxid.
        expect(t.getCzxid(), x.getCzxid(), "x made in the same zxid as its parent");
        expect(t.getCzxid(), s.getCzxid(), "seq made in the same zxid as its parent");
        expect(t.getCzxid(), x.getMzxid(), "x set in the same zxid");
        expect(2, t.getNumChildren(), "parent's child count");
    }

    static List<String> sorted(Collection<String> items) {
        List<String> list = new ArrayList<>(items);
        Collections.sort(list);
        return list;
    }

    static void transactionRollback() throws Exception {
        String tx = path("rollback");
        a.create().creatingParentsIfNeeded().forPath(tx, bytes("0"));
        a.setData().forPath(tx, bytes("1"));
        // A stale version in the middle: nothing of the three happens.
        try {
            a.transaction().forOperations(List.of(
                    a.transactionOp().create().forPath(tx + "/y", bytes("y")),
                    a.transactionOp().setData().withVersion(0).forPath(tx, bytes("stale")),
                    a.transactionOp().create().forPath(tx + "/z", bytes("z"))));
            throw new AssertionError("a transaction with a stale version committed");
        } catch (KeeperException.BadVersionException e) {
            expect(List.of(0, KeeperException.Code.BADVERSION.intValue(),
                            KeeperException.Code.RUNTIMEINCONSISTENCY.intValue()),
                    errors(e.getResults()), "per-operation results");
        }
        // A delete of a missing node after a create that worked.
        try {
            a.transaction().forOperations(List.of(
                    a.transactionOp().create().forPath(tx + "/y", bytes("y")),
                    a.transactionOp().delete().forPath(tx + "/missing")));
            throw new AssertionError("a transaction deleting a missing node committed");
        } catch (KeeperException.NoNodeException e) {
            expect(List.of(0, KeeperException.Code.NONODE.intValue()), errors(e.getResults()),
                    "per-operation results");
        }
        // A failing check after a create of a node that already exists: the first error counts.
        try {
            a.transaction().forOperations(List.of(
                    a.transactionOp().create().forPath(tx, bytes("again")),
                    a.transactionOp().check().withVersion(7).forPath(tx)));
            throw new AssertionError("a transaction creating an existing node committed");
        } catch (KeeperException.NodeExistsException e) {
            expect(List.of(KeeperException.Code.NODEEXISTS.intValue(),
                            KeeperException.Code.RUNTIMEINCONSISTENCY.intValue()),
                    errors(e.getResults()), "per-operation results");
        }
        sync(b, tx);
        expect(List.of(), b.getChildren().forPath(tx), "children left by failed transactions");
        Stat stat = new Stat();
        expect("1", str(b.getData().storingStatIn(stat).forPath(tx)), "data after failed transactions");
        expect(1, stat.getVersion(), "version after failed transactions");
        expect(0, stat.getCversion(), "child version after failed transactions");
    }

    static List<Integer> errors(List<OpResult> results) {
        require(results != null, "the exception carries no per-operation results");
        return results.stream()
                .map(r -> r instanceof OpResult.ErrorResult ? ((OpResult.ErrorResult) r).getErr() : 999)
                .collect(Collectors.toList());
    }

    // ---------------------------------------------------------------- locks

    static void mutexExclusion() throws Exception {
        String lock = path("mutex");
        String counter = path("mutex-counter");
        a.create().creatingParentsIfNeeded().forPath(counter, bytes("0"));
        AtomicInteger holders = new AtomicInteger();
        int rounds = 8;
        List<Callable<Integer>> workers = new ArrayList<>();
        for (CuratorFramework client : List.of(a, b, c, a, b, c)) {
            workers.add(() -> {
                InterProcessMutex mutex = new InterProcessMutex(client, lock);
                for (int i = 0; i < rounds; i++) {
                    require(mutex.acquire(WAIT_SECONDS, TimeUnit.SECONDS), "lock not acquired");
                    try {
                        require(holders.incrementAndGet() == 1, "two holders of the lock at once");
                        // Read-modify-write with the version read: a write by anyone else since
                        // (or a read that missed the previous holder's write) fails here.
                        Stat stat = new Stat();
                        int n = Integer.parseInt(str(client.getData().storingStatIn(stat).forPath(counter)));
                        client.setData().withVersion(stat.getVersion()).forPath(counter, bytes(Integer.toString(n + 1)));
                        holders.decrementAndGet();
                    } finally {
                        mutex.release();
                    }
                }
                return rounds;
            });
        }
        @SuppressWarnings("unchecked")
        Callable<Integer>[] tasks = workers.toArray(new Callable[0]);
        concurrently(tasks);
        sync(a, counter);
        expect(Integer.toString(6 * rounds), data(a, counter), "counter");
        expect(List.of(), a.getChildren().forPath(lock), "lock nodes left");
    }

    static void mutexReentrant() throws Exception {
        String lock = path("reentrant");
        InterProcessMutex ma = new InterProcessMutex(a, lock);
        InterProcessMutex mb = new InterProcessMutex(b, lock);
        require(ma.acquire(WAIT_SECONDS, TimeUnit.SECONDS), "first acquire");
        require(ma.acquire(WAIT_SECONDS, TimeUnit.SECONDS), "re-entrant acquire");
        require(ma.isAcquiredInThisProcess(), "held after two acquires");
        expect(1, ma.getParticipantNodes().size(), "lock nodes for a re-entered lock");
        require(!mb.acquire(QUIET_MS, TimeUnit.MILLISECONDS), "another client got a held lock");
        ma.release();
        require(ma.isAcquiredInThisProcess(), "held after one of two releases");
        require(!mb.acquire(QUIET_MS, TimeUnit.MILLISECONDS), "another client got a lock still held once");
        ma.release();
        require(!ma.isAcquiredInThisProcess(), "held after both releases");
        try {
            ma.release();
            throw new AssertionError("a third release did not fail");
        } catch (IllegalMonitorStateException expected) {
            // as documented
        }
        require(mb.acquire(WAIT_SECONDS, TimeUnit.SECONDS), "another client gets the released lock");
        require(!ma.acquire(QUIET_MS, TimeUnit.MILLISECONDS), "the first client got the lock back while held");
        mb.release();
    }

    static void semaphore() throws Exception {
        String sem = path("semaphore");
        InterProcessSemaphoreV2 sa = new InterProcessSemaphoreV2(a, sem, 2);
        InterProcessSemaphoreV2 sb = new InterProcessSemaphoreV2(b, sem, 2);
        Collection<Lease> two = sa.acquire(2, WAIT_SECONDS, TimeUnit.SECONDS);
        require(two != null && two.size() == 2, "two leases of two");
        List<Lease> leases = new ArrayList<>(two);
        require(sb.acquire(QUIET_MS, TimeUnit.MILLISECONDS) == null, "a third lease of two");
        Lease first = leases.remove(0);
        sa.returnLease(first);
        Lease got = sb.acquire(WAIT_SECONDS, TimeUnit.SECONDS);
        require(got != null, "a lease after one was returned");
        expect(2, sb.getParticipantNodes().size(), "lease holders");
        require(sa.acquire(QUIET_MS, TimeUnit.MILLISECONDS) == null, "a third lease of two, again");
        sb.returnLease(got);
        sa.returnAll(leases);
        sync(a, sem);
        expect(0, sa.getParticipantNodes().size(), "lease holders after all returned");
    }

    static void readWriteLock() throws Exception {
        String lock = path("rwlock");
        InterProcessReadWriteLock ra = new InterProcessReadWriteLock(a, lock);
        InterProcessReadWriteLock rb = new InterProcessReadWriteLock(b, lock);
        require(ra.readLock().acquire(WAIT_SECONDS, TimeUnit.SECONDS), "read lock");
        require(rb.readLock().acquire(WAIT_SECONDS, TimeUnit.SECONDS), "a second reader");
        rb.readLock().release();
        require(!rb.writeLock().acquire(QUIET_MS, TimeUnit.MILLISECONDS), "write lock while read");
        ra.readLock().release();
        require(rb.writeLock().acquire(WAIT_SECONDS, TimeUnit.SECONDS), "write lock after readers left");
        require(!ra.readLock().acquire(QUIET_MS, TimeUnit.MILLISECONDS), "read lock while written");
        require(!ra.writeLock().acquire(QUIET_MS, TimeUnit.MILLISECONDS), "two writers");
        // The writer may read too (a downgrade).
        require(rb.readLock().acquire(WAIT_SECONDS, TimeUnit.SECONDS), "writer's own read lock");
        rb.writeLock().release();
        require(!ra.writeLock().acquire(QUIET_MS, TimeUnit.MILLISECONDS), "write lock while read (downgraded)");
        rb.readLock().release();
        require(ra.writeLock().acquire(WAIT_SECONDS, TimeUnit.SECONDS), "write lock once free");
        ra.writeLock().release();
    }

    // ---------------------------------------------------------------- leaders

    static void leaderLatch() throws Exception {
        String path = path("latch");
        BlockingQueue<String> events = new LinkedBlockingQueue<>();
        LeaderLatch la = new LeaderLatch(a, path, "A");
        LeaderLatch lb = new LeaderLatch(b, path, "B");
        for (LeaderLatch latch : List.of(la, lb)) {
            latch.addListener(new LeaderLatchListener() {
                public void isLeader() {
                    events.add("leader " + latch.getId());
                }

                public void notLeader() {
                    events.add("not leader " + latch.getId());
                }
            });
        }
        try {
            la.start();
            lb.start();
            String first = next(events, "leader elected");
            require(first.startsWith("leader "), "first event: " + first);
            String leaderId = first.substring("leader ".length());
            LeaderLatch leader = leaderId.equals("A") ? la : lb;
            LeaderLatch other = leader == la ? lb : la;
            eventually("both latches have their nodes", () -> la.getOurPath() != null && lb.getOurPath() != null);
            sync(a, path);
            sync(b, path);
            for (LeaderLatch latch : List.of(la, lb)) {
                Collection<Participant> ps = latch.getParticipants();
                expect(2, ps.size(), "participants seen by " + latch.getId());
                expect(1, (int) ps.stream().filter(Participant::isLeader).count(), "leaders seen by " + latch.getId());
                expect(leaderId, latch.getLeader().getId(), "leader seen by " + latch.getId());
            }
            require(leader.hasLeadership() && !other.hasLeadership(), "exactly one latch leads");
            require(!other.await(QUIET_MS, TimeUnit.MILLISECONDS), "the other latch's await returned");
            expectQuiet(events, "latch event");
            leader.close();
            expectNext(events, "leader " + other.getId(), "leadership after the leader closed");
            require(other.hasLeadership(), "the remaining latch leads");
            require(other.await(1, TimeUnit.SECONDS), "await of the leader");
            sync(other == la ? a : b, path);
            expect(other.getId(), other.getLeader().getId(), "leader after close");
            expect(1, other.getParticipants().size(), "participants after close");
        } finally {
            for (LeaderLatch latch : List.of(la, lb)) {
                if (latch.getState() == LeaderLatch.State.STARTED) {
                    latch.close();
                }
            }
        }
    }

    static void leaderSelector() throws Exception {
        String path = path("selector");
        AtomicInteger leading = new AtomicInteger();
        AtomicBoolean overlap = new AtomicBoolean();
        BlockingQueue<String> took = new LinkedBlockingQueue<>();
        Map<String, CountDownLatch> release = new ConcurrentHashMap<>();
        List<LeaderSelector> selectors = new ArrayList<>();
        for (String id : List.of("A", "B")) {
            release.put(id, new CountDownLatch(1));
            LeaderSelector s = new LeaderSelector(id.equals("A") ? a : b, path, new LeaderSelectorListenerAdapter() {
                public void takeLeadership(CuratorFramework client) throws Exception {
                    if (leading.incrementAndGet() != 1) {
                        overlap.set(true);
                    }
                    took.add(id);
                    try {
                        release.get(id).await(CHECK_SECONDS, TimeUnit.SECONDS);
                    } finally {
                        leading.decrementAndGet();
                    }
                }
            });
            s.setId(id);
            selectors.add(s);
        }
        try {
            for (LeaderSelector s : selectors) {
                s.start();
            }
            String first = next(took, "leader");
            LeaderSelector leader = selectors.get(first.equals("A") ? 0 : 1);
            LeaderSelector other = selectors.get(first.equals("A") ? 1 : 0);
            eventually("two participants", probe(() -> other.getParticipants().size() == 2));
            expect(first, other.getLeader().getId(), "leader seen by the other");
            require(leader.hasLeadership() && !other.hasLeadership(), "exactly one leads");
            expectQuiet(took, "second leader while the first leads");
            release.get(first).countDown();
            expectNext(took, other.getId(), "leadership passed on");
            require(other.hasLeadership(), "the other leads");
            release.get(other.getId()).countDown();
            expectQuiet(took, "leadership again (no requeue)");
            require(!overlap.get(), "two leaders at once");
        } finally {
            for (CountDownLatch l : release.values()) {
                l.countDown();
            }
            for (LeaderSelector s : selectors) {
                s.close();
            }
        }
    }

    // ---------------------------------------------------------------- queues

    static QueueConsumer<String> consumer(BlockingQueue<String> into) {
        return new QueueConsumer<String>() {
            public void consumeMessage(String message) {
                into.add(message);
            }

            public void stateChanged(CuratorFramework client, ConnectionState newState) {
            }
        };
    }

    static void distributedQueue() throws Exception {
        String path = path("queue");
        BlockingQueue<String> got = new LinkedBlockingQueue<>();
        DistributedQueue<String> consumerQ = QueueBuilder.builder(b, consumer(got), STRINGS, path).buildQueue();
        DistributedQueue<String> producer = QueueBuilder.builder(a, null, STRINGS, path).putInBackground(false).buildQueue();
        try {
            consumerQ.start();
            producer.start();
            List<String> sent = new ArrayList<>();
            for (int i = 0; i < 10; i++) {
                sent.add("item-" + i);
                producer.put("item-" + i);
            }
            List<String> received = new ArrayList<>();
            for (int i = 0; i < sent.size(); i++) {
                received.add(next(got, "queue item " + i));
            }
            expect(sent, received, "items consumed, in order");
            expectQuiet(got, "queue item");
            eventually("consumed items removed", probe(() -> {
                sync(a, path);
                return a.getChildren().forPath(path).isEmpty();
            }));
        } finally {
            producer.close();
            consumerQ.close();
        }
    }

    static void priorityQueue() throws Exception {
        String path = path("priority");
        DistributedPriorityQueue<String> producer =
                QueueBuilder.builder(a, null, STRINGS, path).putInBackground(false).buildPriorityQueue(0);
        BlockingQueue<String> got = new LinkedBlockingQueue<>();
        DistributedPriorityQueue<String> consumerQ = QueueBuilder.builder(b, consumer(got), STRINGS, path).buildPriorityQueue(0);
        try {
            producer.start();
            int[] priorities = {5, -2, 3, 10, 0, 7};
            for (int p : priorities) {
                producer.put("p" + p, p);
            }
            expect(priorities.length, a.getChildren().forPath(path).size(), "items queued");
            sync(b, path);
            consumerQ.start();
            List<String> received = new ArrayList<>();
            for (int i = 0; i < priorities.length; i++) {
                received.add(next(got, "priority item " + i));
            }
            expect(List.of("p-2", "p0", "p3", "p5", "p7", "p10"), received, "items in priority order");
        } finally {
            producer.close();
            consumerQ.close();
        }
    }

    static void simpleQueue() throws Exception {
        String path = path("simple-queue");
        SimpleDistributedQueue qa = new SimpleDistributedQueue(a, path);
        SimpleDistributedQueue qb = new SimpleDistributedQueue(b, path);
        // A taker waiting before anything is offered gets it once it is.
        CountDownLatch waiting = new CountDownLatch(1);
        Future<byte[]> taker = pool.submit(() -> {
            waiting.countDown();
            return qb.poll(WAIT_SECONDS, TimeUnit.SECONDS);
        });
        require(waiting.await(WAIT_SECONDS, TimeUnit.SECONDS), "taker started");
        require(qa.offer(bytes("first")), "offer");
        expect("first", str(taker.get(WAIT_SECONDS + 1, TimeUnit.SECONDS)), "item taken by the waiting taker");
        for (int i = 0; i < 5; i++) {
            require(qa.offer(bytes("s" + i)), "offer " + i);
        }
        sync(b, path);
        expect("s0", str(qb.peek()), "head of the queue");
        for (int i = 0; i < 5; i++) {
            expect("s" + i, str(qb.poll(WAIT_SECONDS, TimeUnit.SECONDS)), "item " + i);
        }
        expect(null, qb.poll(), "poll of an empty queue");
        try {
            qa.remove();
            throw new AssertionError("remove from an empty queue did not fail");
        } catch (java.util.NoSuchElementException expected) {
            // as documented
        }
    }

    // ---------------------------------------------------------------- barriers

    static void barrier() throws Exception {
        String path = path("barrier");
        DistributedBarrier ba = new DistributedBarrier(a, path);
        DistributedBarrier bb = new DistributedBarrier(b, path);
        ba.setBarrier();
        sync(b, path);
        require(!bb.waitOnBarrier(QUIET_MS, TimeUnit.MILLISECONDS), "passed a set barrier");
        CountDownLatch waiting = new CountDownLatch(1);
        Future<Boolean> waiter = pool.submit(() -> {
            waiting.countDown();
            return bb.waitOnBarrier(WAIT_SECONDS, TimeUnit.SECONDS);
        });
        require(waiting.await(WAIT_SECONDS, TimeUnit.SECONDS), "waiter started");
        ba.removeBarrier();
        require(waiter.get(WAIT_SECONDS + 1, TimeUnit.SECONDS), "waiter released by the barrier's removal");
        require(a.checkExists().forPath(path) == null, "barrier node left");
    }

    static void doubleBarrier() throws Exception {
        String path = path("double-barrier");
        AtomicInteger arrived = new AtomicInteger();
        AtomicInteger left = new AtomicInteger();
        List<Callable<String>> members = new ArrayList<>();
        for (CuratorFramework client : List.of(a, b, c)) {
            members.add(() -> {
                DistributedDoubleBarrier barrier = new DistributedDoubleBarrier(client, path, 3);
                arrived.incrementAndGet();
                require(barrier.enter(WAIT_SECONDS, TimeUnit.SECONDS), "entered");
                int seen = arrived.get();
                require(barrier.leave(WAIT_SECONDS, TimeUnit.SECONDS), "left");
                left.incrementAndGet();
                return Integer.toString(seen);
            });
        }
        @SuppressWarnings("unchecked")
        Callable<String>[] tasks = members.toArray(new Callable[0]);
        expect(List.of("3", "3", "3"), concurrently(tasks), "members there when each entered");
        expect(3, left.get(), "members that left");
        // Two of three never get in.
        String partial = path("double-barrier-partial");
        List<Boolean> entered = concurrently(
                () -> new DistributedDoubleBarrier(a, partial, 3).enter(500, TimeUnit.MILLISECONDS),
                () -> new DistributedDoubleBarrier(b, partial, 3).enter(500, TimeUnit.MILLISECONDS));
        expect(List.of(false, false), entered, "entered with two of three");
    }

    // ---------------------------------------------------------------- caches

    static String rel(String root, String path) {
        return path.equals(root) ? "/" : path.substring(root.length());
    }

    static void curatorCache() throws Exception {
        String root = path("cache");
        a.create().creatingParentsIfNeeded().forPath(root, bytes("root"));
        a.create().forPath(root + "/pre", bytes("p"));
        sync(b, root);
        BlockingQueue<String> events = new LinkedBlockingQueue<>();
        CuratorCache cache = CuratorCache.build(b, root);
        cache.listenable().addListener(CuratorCacheListener.builder()
                .forCreates(n -> events.add("create " + rel(root, n.getPath()) + " " + str(n.getData())))
                .forChanges((old, n) -> events.add("change " + rel(root, n.getPath()) + " " + str(old.getData())
                        + "->" + str(n.getData())))
                .forDeletes(n -> events.add("delete " + rel(root, n.getPath()) + " " + str(n.getData())))
                .forInitialized(() -> events.add("initialized"))
                .build());
        try {
            cache.start();
            Set<String> initial = new TreeSet<>();
            for (String e = next(events, "initial event"); !e.equals("initialized"); e = next(events, "initial event")) {
                initial.add(e);
            }
            expect(new TreeSet<>(List.of("create / root", "create /pre p")), initial, "initial events");
            a.create().forPath(root + "/c1", bytes("a"));
            expectNext(events, "create /c1 a", "event");
            a.setData().forPath(root + "/c1", bytes("b"));
            expectNext(events, "change /c1 a->b", "event");
            a.create().forPath(root + "/c1/g", bytes("x"));
            expectNext(events, "create /c1/g x", "event");
            a.delete().forPath(root + "/c1/g");
            expectNext(events, "delete /c1/g x", "event");
            a.delete().forPath(root + "/c1");
            expectNext(events, "delete /c1 b", "event");
            a.setData().forPath(root, bytes("root2"));
            expectNext(events, "change / root->root2", "event");
            expectQuiet(events, "cache event");
            expect(2, cache.size(), "nodes cached");
            expect("p", cache.get(root + "/pre").map(d -> str(d.getData())).orElse(null), "cached data of /pre");
        } finally {
            cache.close();
        }
    }

    @SuppressWarnings("deprecation")
    static void pathChildrenCache() throws Exception {
        String root = path("pcc");
        a.create().creatingParentsIfNeeded().forPath(root, bytes("root"));
        a.create().forPath(root + "/pre", bytes("p"));
        sync(b, root);
        BlockingQueue<String> events = new LinkedBlockingQueue<>();
        PathChildrenCache cache = new PathChildrenCache(b, root, true);
        cache.getListenable().addListener((client, event) -> {
            ChildData d = event.getData();
            events.add(event.getType() + (d == null ? "" : " " + rel(root, d.getPath()) + " " + str(d.getData())));
        });
        try {
            cache.start(PathChildrenCache.StartMode.POST_INITIALIZED_EVENT);
            expectNext(events, "CHILD_ADDED /pre p", "event");
            expectNext(events, "INITIALIZED", "event");
            a.create().forPath(root + "/c1", bytes("a"));
            expectNext(events, "CHILD_ADDED /c1 a", "event");
            a.setData().forPath(root + "/c1", bytes("b"));
            expectNext(events, "CHILD_UPDATED /c1 b", "event");
            // Grandchildren are not its business.
            a.create().forPath(root + "/c1/g", bytes("x"));
            a.delete().forPath(root + "/c1/g");
            a.delete().forPath(root + "/c1");
            expectNext(events, "CHILD_REMOVED /c1 b", "event");
            expectQuiet(events, "cache event");
            expect(List.of(root + "/pre"),
                    cache.getCurrentData().stream().map(ChildData::getPath).collect(Collectors.toList()), "children cached");
        } finally {
            cache.close();
        }
    }

    static void treeCache() throws Exception {
        String root = path("tree");
        a.create().creatingParentsIfNeeded().forPath(root, bytes("root"));
        a.create().forPath(root + "/pre", bytes("p"));
        sync(b, root);
        BlockingQueue<String> events = new LinkedBlockingQueue<>();
        TreeCache cache = TreeCache.newBuilder(b, root).setCacheData(true).build();
        cache.getListenable().addListener((client, event) -> {
            ChildData d = event.getData();
            events.add(event.getType() + (d == null ? "" : " " + rel(root, d.getPath()) + " " + str(d.getData())));
        });
        try {
            cache.start();
            Set<String> initial = new TreeSet<>();
            for (String e = next(events, "initial event"); !e.equals("INITIALIZED"); e = next(events, "initial event")) {
                initial.add(e);
            }
            expect(new TreeSet<>(List.of("NODE_ADDED / root", "NODE_ADDED /pre p")), initial, "initial events");
            a.create().forPath(root + "/c1", bytes("a"));
            expectNext(events, "NODE_ADDED /c1 a", "event");
            a.create().forPath(root + "/c1/g", bytes("x"));
            expectNext(events, "NODE_ADDED /c1/g x", "event");
            a.setData().forPath(root + "/c1/g", bytes("y"));
            expectNext(events, "NODE_UPDATED /c1/g y", "event");
            a.delete().forPath(root + "/c1/g");
            expectNext(events, "NODE_REMOVED /c1/g y", "event");
            a.delete().forPath(root + "/c1");
            expectNext(events, "NODE_REMOVED /c1 a", "event");
            expectQuiet(events, "cache event");
            expect(Map.of("pre", "p"), cache.getCurrentChildren(root).entrySet().stream()
                    .collect(Collectors.toMap(Map.Entry::getKey, e -> str(e.getValue().getData()))), "children cached");
        } finally {
            cache.close();
        }
    }

    // ---------------------------------------------------------------- shared values

    static void sharedCount() throws Exception {
        String path = path("count");
        SharedCount ca = new SharedCount(a, path, 0);
        SharedCount cb = new SharedCount(b, path, 0);
        BlockingQueue<Integer> seenA = new LinkedBlockingQueue<>();
        BlockingQueue<Integer> seenB = new LinkedBlockingQueue<>();
        ca.addListener(countListener(seenA));
        cb.addListener(countListener(seenB));
        try {
            ca.start();
            cb.start();
            VersionedValue<Integer> a0 = ca.getVersionedValue();
            VersionedValue<Integer> b0 = cb.getVersionedValue();
            expect(0, a0.getValue(), "seed seen by A");
            expect(0, a0.getVersion(), "version seen by A");
            expect(0, b0.getValue(), "seed seen by B");
            expect(0, b0.getVersion(), "version seen by B");
            require(cb.trySetCount(b0, 5), "B's set at the current version");
            require(!ca.trySetCount(a0, 7), "A's set at a stale version succeeded");
            awaitCount(seenA, 5, "A told of B's 5");
            VersionedValue<Integer> a1 = ca.getVersionedValue();
            expect(5, a1.getValue(), "A's value");
            expect(1, a1.getVersion(), "A's version");
            require(ca.trySetCount(a1, 7), "A's set at the current version");
            awaitCount(seenB, 7, "B told of A's 7");
            expect(2, cb.getVersionedValue().getVersion(), "B's version");
            require(!cb.trySetCount(b0, 8), "B's set at a stale version succeeded");
            cb.setCount(9);
            awaitCount(seenA, 9, "A told of B's 9");
            sync(a, path);
            Stat stat = new Stat();
            byte[] raw = a.getData().storingStatIn(stat).forPath(path);
            expect("[0, 0, 0, 9]", Arrays.toString(raw), "stored count (4 bytes, big-endian)");
            expect(3, stat.getVersion(), "node version");
        } finally {
            ca.close();
            cb.close();
        }
    }

    static SharedCountListener countListener(BlockingQueue<Integer> into) {
        return new SharedCountListener() {
            public void countHasChanged(SharedCountReader reader, int newCount) {
                into.add(newCount);
            }

            public void stateChanged(CuratorFramework client, ConnectionState newState) {
            }
        };
    }

    static void awaitCount(BlockingQueue<Integer> seen, int value, String what) throws InterruptedException {
        while (true) {
            int n = next(seen, what);
            if (n == value) {
                return;
            }
        }
    }

    static void atomicLong() throws Exception {
        String path = path("atomic");
        DistributedAtomicLong la = new DistributedAtomicLong(a, path, new RetryNTimes(100, 5));
        DistributedAtomicLong lb = new DistributedAtomicLong(b, path, new RetryNTimes(100, 5));
        require(la.initialize(0L), "first initialize");
        require(!lb.initialize(5L), "second initialize succeeded");
        int rounds = 15;
        List<Long> fails = concurrently(
                () -> increments(la, rounds), () -> increments(lb, rounds), () -> increments(la, rounds));
        expect(List.of(0L, 0L, 0L), fails, "increments that did not succeed");
        sync(a, path);
        AtomicValue<Long> now = la.get();
        require(now.succeeded(), "get");
        expect(3L * rounds, now.postValue(), "value after concurrent increments");
        require(!la.compareAndSet(3L * rounds - 1, 100L).succeeded(), "compareAndSet with a wrong expectation");
        AtomicValue<Long> cas = la.compareAndSet(3L * rounds, 100L);
        require(cas.succeeded(), "compareAndSet with the right expectation");
        expect(3L * rounds, cas.preValue(), "compareAndSet's previous value");
        sync(b, path);
        expect(100L, lb.get().postValue(), "value seen by the other client");
        AtomicValue<Long> sub = lb.subtract(58L);
        require(sub.succeeded(), "subtract");
        expect(42L, sub.postValue(), "value after subtract");
    }

    static long increments(DistributedAtomicLong counter, int rounds) throws Exception {
        long failed = 0;
        long last = -1;
        for (int i = 0; i < rounds; i++) {
            AtomicValue<Long> v = counter.increment();
            if (!v.succeeded()) {
                failed++;
                continue;
            }
            require(v.postValue() == v.preValue() + 1, "increment from " + v.preValue() + " to " + v.postValue());
            require(v.postValue() > last, "values seen going back: " + last + " then " + v.postValue());
            last = v.postValue();
        }
        return failed;
    }

    // ---------------------------------------------------------------- nodes and watches

    /** Closes client's session on the server, as another client would by attaching to the same
     * session (id and password) and closing it; the client is then told its session expired. */
    static void killSession(CuratorFramework client, BlockingQueue<ConnectionState> states) throws Exception {
        ZooKeeper zk = client.getZookeeperClient().getZooKeeper();
        long id = zk.getSessionId();
        byte[] password = zk.getSessionPasswd();
        for (int attempt = 1; ; attempt++) {
            CountDownLatch connected = new CountDownLatch(1);
            ZooKeeper killer = new ZooKeeper(hosts[0], 10_000, e -> {
                if (e.getState() == Watcher.Event.KeeperState.SyncConnected) {
                    connected.countDown();
                }
            }, id, password);
            try {
                require(connected.await(WAIT_SECONDS, TimeUnit.SECONDS), "connected to the session to kill");
                expect(id, killer.getSessionId(), "session attached to");
            } finally {
                killer.close();
            }
            // The client reconnects (within a second), to learn its session expired. If it got
            // back onto its session before our close went through (a race the client's backoff
            // makes rare), the session is gone anyway; try again only if no loss shows.
            ConnectionState s;
            while ((s = states.poll(5, TimeUnit.SECONDS)) != null) {
                if (s == ConnectionState.LOST) {
                    return;
                }
            }
            require(attempt < 3, "the client never lost its closed session");
        }
    }

    static void persistentNode() throws Exception {
        String path = path("persistent-node");
        CuratorFramework owner = client(0);
        BlockingQueue<ConnectionState> states = new LinkedBlockingQueue<>();
        owner.getConnectionStateListenable().addListener((cl, s) -> states.add(s));
        BlockingQueue<String> created = new LinkedBlockingQueue<>();
        PersistentNode node = new PersistentNode(owner, CreateMode.EPHEMERAL, false, path, bytes("v1"));
        node.getListenable().addListener(created::add);
        try {
            node.start();
            require(node.waitForInitialCreate(WAIT_SECONDS, TimeUnit.SECONDS), "initial create");
            expectNext(created, path, "node created");
            long firstSession = owner.getZookeeperClient().getZooKeeper().getSessionId();
            sync(b, path);
            Stat stat = b.checkExists().forPath(path);
            require(stat != null, "node seen by another client");
            expect(firstSession, stat.getEphemeralOwner(), "ephemeral owner");

            // Its session closed on the server: the node goes, and comes back with the new session.
            killSession(owner, states);
            expectNext(created, path, "node re-created after its session was closed");
            require(owner.blockUntilConnected(WAIT_SECONDS, TimeUnit.SECONDS), "owner reconnected");
            long secondSession = owner.getZookeeperClient().getZooKeeper().getSessionId();
            require(secondSession != firstSession, "a new session after the old was closed");
            sync(b, path);
            stat = new Stat();
            expect("v1", str(b.getData().storingStatIn(stat).forPath(path)), "re-created node's data");
            expect(secondSession, stat.getEphemeralOwner(), "re-created node's owner");

            // New data (written in the background: another client's data watch tells when), then
            // deleted by someone else: it comes back with the new data.
            BlockingQueue<String> changed = new LinkedBlockingQueue<>();
            expect("v1", str(b.getData().usingWatcher((Watcher) e -> changed.add(e.getType() + " " + e.getPath()))
                    .forPath(path)), "data before setData");
            node.setData(bytes("v2"));
            expectNext(changed, "NodeDataChanged " + path, "data watch");
            expect("v2", data(b, path), "data after setData");
            b.delete().forPath(path);
            expectNext(created, path, "node re-created after being deleted");
            sync(b, path);
            stat = new Stat();
            expect("v2", str(b.getData().storingStatIn(stat).forPath(path)), "data of the node made again");
            expect(secondSession, stat.getEphemeralOwner(), "owner of the node made again");
            node.close();
            sync(b, path);
            require(b.checkExists().forPath(path) == null, "node left after close");
        } finally {
            node.close();
            owner.close();
        }
    }

    static String event(String root, org.apache.zookeeper.WatchedEvent e) {
        return e.getType() + " " + (e.getPath() == null ? null : rel(root, e.getPath()));
    }

    static void persistentWatcherRecursive() throws Exception {
        String root = path("watch-recursive");
        a.create().creatingParentsIfNeeded().forPath(root, bytes("r0"));
        BlockingQueue<String> events = new LinkedBlockingQueue<>();
        CountDownLatch added = new CountDownLatch(1);
        // Else B's member may apply the create after the watch is added, and report it.
        sync(b, root);
        PersistentWatcher watcher = new PersistentWatcher(b, root, true);
        watcher.getListenable().addListener(e -> events.add(event(root, e)));
        watcher.getResetListenable().addListener(added::countDown);
        try {
            watcher.start();
            require(added.await(WAIT_SECONDS, TimeUnit.SECONDS), "watch added");
            a.create().forPath(root + "/a", bytes("1"));
            a.create().forPath(root + "/a/b", bytes("x"));
            a.setData().forPath(root + "/a/b", bytes("y"));
            a.delete().forPath(root + "/a/b");
            a.setData().forPath(root, bytes("r1"));
            a.delete().forPath(root + "/a");
            for (String expected : List.of("NodeCreated /a", "NodeCreated /a/b", "NodeDataChanged /a/b",
                    "NodeDeleted /a/b", "NodeDataChanged /", "NodeDeleted /a")) {
                expectNext(events, expected, "event");
            }
            expectQuiet(events, "event (a recursive watch has no child events)");
            watcher.close();
            a.create().forPath(root + "/after-close");
            expectQuiet(events, "event after the watcher closed");
        } finally {
            watcher.close();
        }
    }

    static void persistentWatcher() throws Exception {
        String root = path("watch");
        a.create().creatingParentsIfNeeded().forPath(root, bytes("r0"));
        BlockingQueue<String> events = new LinkedBlockingQueue<>();
        CountDownLatch added = new CountDownLatch(1);
        // Else B's member may apply the create after the watch is added, and report it.
        sync(b, root);
        PersistentWatcher watcher = new PersistentWatcher(b, root, false);
        watcher.getListenable().addListener(e -> events.add(event(root, e)));
        watcher.getResetListenable().addListener(added::countDown);
        try {
            watcher.start();
            require(added.await(WAIT_SECONDS, TimeUnit.SECONDS), "watch added");
            a.create().forPath(root + "/c", bytes("1"));
            a.create().forPath(root + "/c/d", bytes("2"));   // a grandchild: no event
            a.setData().forPath(root + "/c", bytes("3"));    // a child's data: no event
            a.setData().forPath(root, bytes("r1"));
            a.delete().forPath(root + "/c/d");
            a.delete().forPath(root + "/c");
            a.delete().forPath(root);
            a.create().forPath(root, bytes("again"));
            for (String expected : List.of("NodeChildrenChanged /", "NodeDataChanged /", "NodeChildrenChanged /",
                    "NodeDeleted /", "NodeCreated /")) {
                expectNext(events, expected, "event");
            }
            expectQuiet(events, "event");
        } finally {
            watcher.close();
        }
    }

    // ---------------------------------------------------------------- service discovery

    static void serviceDiscovery() throws Exception {
        String path = path("services");
        ServiceDiscovery<String> da = ServiceDiscoveryBuilder.builder(String.class).client(a).basePath(path).build();
        ServiceDiscovery<String> db = ServiceDiscoveryBuilder.builder(String.class).client(b).basePath(path).build();
        ServiceCache<String> cache = null;
        try {
            da.start();
            db.start();
            cache = db.serviceCacheBuilder().name("svc").build();
            BlockingQueue<String> changes = new LinkedBlockingQueue<>();
            ServiceCache<String> theCache = cache;
            cache.addListener(new ServiceCacheListener() {
                public void cacheChanged() {
                    changes.add(ids(theCache.getInstances()).toString());
                }

                public void stateChanged(CuratorFramework client, ConnectionState newState) {
                }
            });
            cache.start();
            expect(List.of(), cache.getInstances(), "instances cached before any registration");
            ServiceInstance<String> one = ServiceInstance.<String>builder()
                    .name("svc").id("i1").address("10.0.0.1").port(1001).payload("one").build();
            ServiceInstance<String> two = ServiceInstance.<String>builder()
                    .name("svc").id("i2").address("10.0.0.2").port(1002).payload("two").build();
            da.registerService(one);
            da.registerService(two);
            sync(b, path);
            expect(List.of("svc"), new ArrayList<>(db.queryForNames()), "service names");
            Collection<ServiceInstance<String>> found = db.queryForInstances("svc");
            expect(List.of("i1", "i2"), ids(found), "instances found");
            for (ServiceInstance<String> i : found) {
                ServiceInstance<String> registered = i.getId().equals("i1") ? one : two;
                expect(registered.getAddress(), i.getAddress(), "address of " + i.getId());
                expect(registered.getPort(), i.getPort(), "port of " + i.getId());
                expect(registered.getPayload(), i.getPayload(), "payload of " + i.getId());
                expect(registered.getRegistrationTimeUTC(), i.getRegistrationTimeUTC(), "registration time of " + i.getId());
            }
            expect("one", db.queryForInstance("svc", "i1").getPayload(), "payload of i1 by id");
            Stat stat = b.checkExists().forPath(path + "/svc/i1");
            expect(a.getZookeeperClient().getZooKeeper().getSessionId(), stat.getEphemeralOwner(),
                    "registration's ephemeral owner");
            awaitChange(changes, "[i1, i2]", "cache with both");

            da.unregisterService(one);
            sync(b, path);
            expect(List.of("i2"), ids(db.queryForInstances("svc")), "instances after unregistering i1");
            expect(null, db.queryForInstance("svc", "i1"), "i1 by id after unregistering");
            awaitChange(changes, "[i2]", "cache without i1");

            // Closing the discovery unregisters what it registered.
            da.close();
            sync(b, path);
            expect(List.of(), ids(db.queryForInstances("svc")), "instances after close");
            awaitChange(changes, "[]", "cache emptied");
        } finally {
            if (cache != null) {
                cache.close();
            }
            db.close();
            da.close();
        }
    }

    static List<String> ids(Collection<ServiceInstance<String>> instances) {
        return instances.stream().map(ServiceInstance::getId).sorted().collect(Collectors.toList());
    }

    static void awaitChange(BlockingQueue<String> changes, String expected, String what) throws InterruptedException {
        while (!next(changes, what + " (" + expected + ")").equals(expected)) {
            // an intermediate state
        }
    }
}
