package bluegreen.harness;

import java.io.InputStream;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.harness.Neo4j;
import org.neo4j.harness.Neo4jBuilders;
import org.neo4j.io.ByteUnit;

/**
 * Starts a real Neo4j Community server in-process (Bolt only, HTTP off) with authentication on.
 *
 * Usage: java -cp ... bluegreen.harness.HarnessMain [bolt-port] [password]
 *   bolt-port: 0 (default) lets the OS choose. password: for user neo4j, default "harness-password".
 * Prints "BOLT_URI=bolt://host:port" once the server accepts connections, then stays up until stdin
 * reaches end-of-file or the process gets SIGTERM.
 */
public final class HarnessMain {
    private HarnessMain() {
    }

    public static void main(String[] args) throws Exception {
        int port = args.length > 0 ? Integer.parseInt(args[0]) : 0;
        String password = args.length > 1 ? args[1] : "harness-password";

        Neo4j neo4j = Neo4jBuilders.newInProcessBuilder()
                .withDisabledServer()
                .withConfig(GraphDatabaseSettings.auth_enabled, true)
                .withConfig(BoltConnector.enabled, true)
                .withConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .withConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(64))
                .build();

        // The embedded API runs with full access, so it can set the password of the built-in user
        // (user management is a Community feature); then Bolt clients must log in with it.
        neo4j.databaseManagementService().database("system").executeTransactionally(
                "ALTER USER neo4j SET PASSWORD $pw CHANGE NOT REQUIRED", Map.of("pw", password));

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            neo4j.close();
            stopped.countDown();
        }, "harness-shutdown"));

        System.out.println("BOLT_URI=" + neo4j.boltURI());
        System.out.flush();

        Thread stdinWatcher = new Thread(() -> {
            try (InputStream in = System.in) {
                byte[] buffer = new byte[256];
                while (in.read(buffer) >= 0) {
                    // discard; end-of-file means the parent went away
                }
            } catch (Exception ignored) {
                // treat as end-of-file
            }
            System.exit(0); // runs the shutdown hook
        }, "harness-stdin");
        stdinWatcher.setDaemon(true);
        stdinWatcher.start();
        stopped.await();
    }
}
