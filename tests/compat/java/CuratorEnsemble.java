// Curator's ensemble tracking against a live ensemble: connects with the connection string given,
// prints the configuration Curator read from /zookeeper/config, then waits until Curator's own
// connection string has moved to the one expected (EnsembleTracker follows /zookeeper/config as a
// reconfig changes it). Run by tests/compat/test_reconfig.py with Java's source launcher:
//
//   java -cp CLASSPATH CuratorEnsemble.java HOSTS EXPECTED_HOSTS
//
// Prints "READY <version hex> <connection string>" once connected and tracking, then
// "TRACKED <connection string>" and exits 0, or exits 1 after 60 s.
import java.util.Arrays;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.RetryOneTime;
import org.apache.zookeeper.server.quorum.flexible.QuorumVerifier;

public class CuratorEnsemble {
    public static void main(String[] args) throws Exception {
        CuratorFramework client = CuratorFrameworkFactory.builder()
                .connectString(args[0])
                .retryPolicy(new RetryOneTime(200))
                .ensembleTracker(true)
                .build();
        client.start();
        if (!client.blockUntilConnected(30, TimeUnit.SECONDS)) {
            System.out.println("NOT CONNECTED");
            System.exit(1);
        }
        long deadline = System.currentTimeMillis() + 30_000;
        QuorumVerifier config = client.getCurrentConfig();
        while ((config == null || config.getVersion() == 0) && System.currentTimeMillis() < deadline) {
            Thread.sleep(100);
            config = client.getCurrentConfig();
        }
        System.out.println("READY " + Long.toHexString(config == null ? 0 : config.getVersion()) + " "
                + client.getZookeeperClient().getCurrentConnectionString());
        System.out.flush();
        String[] expected = args[1].split(",");
        Arrays.sort(expected);
        deadline = System.currentTimeMillis() + 60_000;
        while (System.currentTimeMillis() < deadline) {
            String now = client.getZookeeperClient().getCurrentConnectionString();
            String[] hosts = now.split(",");
            Arrays.sort(hosts);
            if (Arrays.equals(hosts, expected)) {
                System.out.println("TRACKED " + now + " " + Long.toHexString(client.getCurrentConfig().getVersion()));
                client.close();
                System.exit(0);
            }
            Thread.sleep(100);
        }
        System.out.println("STUCK " + client.getZookeeperClient().getCurrentConnectionString());
        System.exit(1);
    }
}
