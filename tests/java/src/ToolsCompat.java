// Compatibility report card for Apache Kafka's own command-line tools (4.4.0),
// run by main class, each as its own JVM, with default settings:
//   kafka-topics               org.apache.kafka.tools.TopicCommand
//   kafka-configs              org.apache.kafka.tools.ConfigCommand
//   kafka-consumer-groups      org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
//   kafka-get-offsets          org.apache.kafka.tools.GetOffsetShell
//   kafka-delete-records       org.apache.kafka.tools.DeleteRecordsCommand
//   kafka-producer-perf-test   org.apache.kafka.tools.ProducerPerformance
//   kafka-consumer-perf-test   org.apache.kafka.tools.ConsumerPerformance
//   kafka-broker-api-versions  org.apache.kafka.tools.BrokerApiVersionsCommand
//   kafka-transactions         org.apache.kafka.tools.TransactionsCommand
//
// Usage: ToolsCompat BOOTSTRAP PREFIX
// (run with java -cp 'target/java/lib/*:target/java/classes'; the tools get the
// same class path). Scenarios build on each other, on topic PREFIX-tools and
// group PREFIX-tools-group. Each checks the tool's exit code and output.
// Progress and the commands go to stderr; the last line on stdout is one JSON
// object: {"client": "Kafka CLI tools", "version": "4.4.0", "results": {...}}.
// About 25 JVM starts; roughly 40-60 s against a local broker.

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

public final class ToolsCompat {
    static final Map<String, String> MAIN_CLASSES = Map.of(
            "kafka-topics", "org.apache.kafka.tools.TopicCommand",
            "kafka-configs", "org.apache.kafka.tools.ConfigCommand",
            "kafka-consumer-groups", "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            "kafka-get-offsets", "org.apache.kafka.tools.GetOffsetShell",
            "kafka-delete-records", "org.apache.kafka.tools.DeleteRecordsCommand",
            "kafka-producer-perf-test", "org.apache.kafka.tools.ProducerPerformance",
            "kafka-consumer-perf-test", "org.apache.kafka.tools.ConsumerPerformance",
            "kafka-broker-api-versions", "org.apache.kafka.tools.BrokerApiVersionsCommand",
            "kafka-transactions", "org.apache.kafka.tools.TransactionsCommand");
    static final int RECORDS = 20_000;
    static final java.util.regex.Pattern FAILURE_LINE =
            java.util.regex.Pattern.compile("(?m)^(Error|ERROR|Exception in thread|\\[[^]]*\\] ERROR )");

    static String bootstrap;
    static String topic;
    static String group;
    static Path scratch;

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: ToolsCompat BOOTSTRAP PREFIX");
            System.exit(2);
        }
        bootstrap = args[0];
        topic = args[1] + "-tools";
        group = args[1] + "-tools-group";
        scratch = Files.createTempDirectory("tools-compat");
        long started = System.nanoTime();
        Report report = new Report(120);

        report.scenario("kafka-topics --create", () -> {
            String out = tool("kafka-topics", "--create", "--topic", topic, "--partitions", "3",
                    "--replication-factor", "1", "--config", "retention.ms=86400000");
            check(out.contains("Created topic " + topic + "."), "output: " + out);
        });
        report.scenario("kafka-topics --list", () -> {
            List<String> names = lines(tool("kafka-topics", "--list"));
            check(names.contains(topic), "listed: " + names);
        });
        report.scenario("kafka-topics --describe", () -> {
            String out = tool("kafka-topics", "--describe", "--topic", topic);
            check(out.contains("PartitionCount: 3") && out.contains("ReplicationFactor: 1"), "output: " + out);
            check(out.contains("retention.ms=86400000"), "topic configs shown: " + out);
            check(partitionLines(out).size() == 3, "3 partition lines: " + out);
            for (String line : partitionLines(out)) {
                check(!line.matches(".*Leader: (none|-1)\\b.*"), "partition has a leader: " + line);
            }
        });
        report.scenario("kafka-topics --alter --partitions", () -> {
            tool("kafka-topics", "--alter", "--topic", topic, "--partitions", "4");
            String out = tool("kafka-topics", "--describe", "--topic", topic);
            check(out.contains("PartitionCount: 4") && partitionLines(out).size() == 4, "output: " + out);
        });
        report.scenario("kafka-configs --describe (topic)", () -> {
            String out = tool("kafka-configs", "--entity-type", "topics", "--entity-name", topic, "--describe");
            check(out.contains("Dynamic configs for topic " + topic + " are:"), "output: " + out);
            check(out.contains("retention.ms=86400000"), "the creation config is shown: " + out);
            String all = tool("kafka-configs", "--entity-type", "topics", "--entity-name", topic, "--describe", "--all");
            check(all.contains("All configs for topic " + topic + " are:")
                    && all.contains("cleanup.policy=delete") && all.contains("max.message.bytes="), "--all: " + all);
        });
        report.scenario("kafka-configs --alter --add-config / --delete-config (topic)", () -> {
            String out = tool("kafka-configs", "--entity-type", "topics", "--entity-name", topic, "--alter",
                    "--add-config", "retention.ms=7200000,max.message.bytes=2000000");
            check(out.contains("Completed updating config for topic " + topic + "."), "output: " + out);
            String described = tool("kafka-configs", "--entity-type", "topics", "--entity-name", topic, "--describe");
            check(described.contains("retention.ms=7200000") && described.contains("max.message.bytes=2000000")
                    && described.contains("DYNAMIC_TOPIC_CONFIG:max.message.bytes=2000000"), "after add: " + described);
            tool("kafka-configs", "--entity-type", "topics", "--entity-name", topic, "--alter",
                    "--delete-config", "max.message.bytes");
            described = tool("kafka-configs", "--entity-type", "topics", "--entity-name", topic, "--describe");
            check(described.contains("retention.ms=7200000") && !described.contains("max.message.bytes="),
                    "after delete: " + described);
        });
        report.scenario("kafka-producer-perf-test", () -> {
            String out = tool("kafka-producer-perf-test", "--topic", topic, "--num-records", Integer.toString(RECORDS),
                    "--record-size", "100", "--throughput", "-1");
            check(out.contains(RECORDS + " records sent"), "output: " + out);
        });
        report.scenario("kafka-producer-perf-test --transactional-id, kafka-transactions list / describe / describe-producers / find-hanging", () -> {
            String txnTopic = topic + "-txn";
            String txnId = topic + "-perf-txn";
            tool("kafka-topics", "--create", "--topic", txnTopic, "--partitions", "2", "--replication-factor", "1");
            String perf = tool("kafka-producer-perf-test", "--topic", txnTopic, "--num-records", "5000",
                    "--record-size", "100", "--throughput", "-1", "--transactional-id", txnId,
                    "--transaction-duration-ms", "100");
            check(perf.contains("5000 records sent"), "output: " + perf);
            String listed = tool("kafka-transactions", "list");
            check(listed.contains(txnId), "list: " + listed);
            String described = tool("kafka-transactions", "describe", "--transactional-id", txnId);
            check(described.contains("CompleteCommit"), "describe: " + described);
            String producers = tool("kafka-transactions", "describe-producers", "--topic", txnTopic,
                    "--partition", "0");
            check(lines(producers).size() >= 2, "describe-producers: " + producers);
            String hanging = tool("kafka-transactions", "find-hanging", "--topic", txnTopic);
            check(lines(hanging).size() <= 1, "no hanging transaction: " + hanging);
        });
        report.scenario("kafka-get-offsets (earliest, latest, max-timestamp)", () -> {
            Map<Integer, Long> earliest = offsets(tool("kafka-get-offsets", "--topic", topic, "--time", "-2"));
            Map<Integer, Long> latest = offsets(tool("kafka-get-offsets", "--topic", topic, "--time", "-1"));
            Map<Integer, Long> maxTs = offsets(tool("kafka-get-offsets", "--topic", topic, "--time", "-3"));
            check(earliest.size() == 4 && earliest.values().stream().allMatch(o -> o == 0), "earliest: " + earliest);
            long total = latest.values().stream().mapToLong(Long::longValue).sum();
            check(latest.size() == 4 && total == RECORDS, "latest: " + latest + " (sum " + total + ")");
            for (int p = 0; p < 4; p++) {
                long m = maxTs.getOrDefault(p, -99L);
                check(latest.get(p) == 0 ? m == -1 : m >= 0 && m < latest.get(p),
                        "max-timestamp " + maxTs + " within the partitions " + latest);
            }
            String named = tool("kafka-get-offsets", "--topic", topic, "--time", "latest");
            check(offsets(named).equals(latest), "--time latest: " + named);
        });
        report.scenario("kafka-consumer-perf-test", () -> {
            String out = tool("kafka-consumer-perf-test", "--topic", topic, "--num-records", Integer.toString(RECORDS),
                    "--group", group);
            List<String> rows = lines(out).stream().filter(l -> !l.startsWith("Warning")).collect(Collectors.toList());
            int header = -1;
            for (int i = 0; i < rows.size(); i++) {
                if (rows.get(i).startsWith("start.time")) {
                    header = i;
                }
            }
            check(header >= 0 && header + 1 < rows.size(), "output: " + out);
            List<String> names = Arrays.asList(rows.get(header).split(",\\s*"));
            List<String> values = Arrays.asList(rows.get(header + 1).split(",\\s*"));
            String consumed = values.get(names.indexOf("data.consumed.in.nMsg"));
            check(Long.parseLong(consumed.trim()) == RECORDS, "consumed " + consumed + ": " + out);
        });
        report.scenario("kafka-consumer-groups --list", () -> {
            List<String> groups = lines(tool("kafka-consumer-groups", "--list"));
            check(groups.contains(group), "listed: " + groups);
        });
        report.scenario("kafka-consumer-groups --describe", () -> {
            List<String[]> rows = groupRows(tool("kafka-consumer-groups", "--describe", "--group", group));
            check(rows.size() == 4, "4 partition rows: " + show(rows));
            long committed = 0;
            for (String[] r : rows) {
                check(r[3].equals(r[4]) && r[5].equals("0"), "caught up (CURRENT-OFFSET = LOG-END-OFFSET): " + show(rows));
                committed += Long.parseLong(r[3]);
            }
            check(committed == RECORDS, "committed offsets sum to " + committed);
        });
        report.scenario("kafka-consumer-groups --reset-offsets --to-earliest --execute", () -> {
            List<String[]> reset = groupRows(tool("kafka-consumer-groups", "--reset-offsets", "--group", group,
                    "--topic", topic, "--to-earliest", "--execute"));
            check(reset.size() == 4 && reset.stream().allMatch(r -> r[3].equals("0")), "NEW-OFFSET 0: " + show(reset));
            List<String[]> rows = groupRows(tool("kafka-consumer-groups", "--describe", "--group", group));
            long lag = 0;
            for (String[] r : rows) {
                check(r[3].equals("0"), "CURRENT-OFFSET 0 after the reset: " + show(rows));
                lag += Long.parseLong(r[5]);
            }
            check(rows.size() == 4 && lag == RECORDS, "the lag is everything: " + lag);
        });
        report.scenario("kafka-consumer-groups --delete-offsets", () -> {
            String out = tool("kafka-consumer-groups", "--delete-offsets", "--group", group, "--topic", topic + ":0");
            check(out.contains("Request succeeded for deleting offsets from group " + group + "."), "output: " + out);
            check(out.matches("(?s).*" + topic + "\\s+0\\s+Successful.*"), "partition 0 deleted: " + out);
            List<String[]> rows = groupRows(tool("kafka-consumer-groups", "--describe", "--group", group));
            List<String> partitions = rows.stream().map(r -> r[2]).sorted().collect(Collectors.toList());
            check(partitions.equals(List.of("1", "2", "3")), "partitions left: " + partitions);
        });
        report.scenario("kafka-consumer-groups --delete", () -> {
            String out = tool("kafka-consumer-groups", "--delete", "--group", group);
            check(out.contains("Deletion of requested consumer groups ('" + group + "') was successful."),
                    "output: " + out);
            List<String> groups = lines(tool("kafka-consumer-groups", "--list"));
            check(!groups.contains(group), "still listed: " + groups);
        });
        report.scenario("kafka-delete-records", () -> {
            Path json = scratch.resolve("delete-records.json");
            Files.writeString(json, "{\"version\": 1, \"partitions\": [{\"topic\": \"" + topic
                    + "\", \"partition\": 0, \"offset\": 100}]}\n");
            String out = tool("kafka-delete-records", "--offset-json-file", json.toString());
            check(out.contains("Records delete operation completed:")
                    && out.matches("(?s).*partition: " + topic + "-0\\s+low_watermark: 100\\b.*"), "output: " + out);
            Map<Integer, Long> earliest = offsets(tool("kafka-get-offsets", "--topic", topic, "--time", "-2"));
            check(earliest.get(0) == 100 && earliest.get(1) == 0, "earliest after the delete: " + earliest);
        });
        report.scenario("kafka-broker-api-versions", () -> {
            String out = tool("kafka-broker-api-versions");
            check(out.contains("(id: ") && out.contains("Produce(0):") && out.contains("Fetch(1):")
                    && out.contains("ApiVersions(18):"), "output: " + out);
            // \\b: ShareFetch(78) is not Fetch(1).
            check(!out.matches("(?s).*\\b(Produce|Fetch|Metadata)\\(\\d+\\): UNSUPPORTED.*"), "core APIs supported: " + out);
        });
        report.scenario("kafka-topics --delete", () -> {
            tool("kafka-topics", "--delete", "--topic", topic);
            long deadline = System.currentTimeMillis() + 15_000;
            List<String> names;
            do {
                names = lines(tool("kafka-topics", "--list"));
            } while (names.contains(topic) && System.currentTimeMillis() < deadline);
            check(!names.contains(topic), "still listed: " + names);
        });

        System.err.printf("== %d/%d scenarios passed in %.1f s%n", report.passed(), report.size(),
                (System.nanoTime() - started) / 1e9);
        System.out.println(report.json("Kafka CLI tools", "4.4.0"));
        try (var files = Files.walk(scratch)) {
            files.sorted(java.util.Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
        }
        System.out.flush();
        System.exit(0);
    }

    /**
     * Runs a tool in its own JVM with --bootstrap-server first and returns its
     * stdout; fails on a non-zero exit, a timeout, or an exception trace.
     */
    static String tool(String name, String... args) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xmx512m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", MAIN_CLASSES.get(name),
                "--bootstrap-server", bootstrap));
        cmd.addAll(List.of(args));
        System.err.println("   $ " + name + " --bootstrap-server " + bootstrap + " " + String.join(" ", args));
        Path out = Files.createTempFile(scratch, name, ".out");
        Path err = Files.createTempFile(scratch, name, ".err");
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectOutput(out.toFile()).redirectError(err.toFile());
        pb.environment().put("CLASSPATH", System.getProperty("java.class.path"));
        Process p = pb.start();
        if (!p.waitFor(90, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError(name + " did not finish within 90 s");
        }
        String stdout = Files.readString(out, StandardCharsets.UTF_8);
        String stderr = Files.readString(err, StandardCharsets.UTF_8);
        if (p.exitValue() != 0) {
            throw new AssertionError(name + " exited " + p.exitValue() + ": " + tail(stderr + stdout));
        }
        // Some tools report failures on stderr but still exit 0; client WARN lines are tolerated.
        if (FAILURE_LINE.matcher(stderr).find() || FAILURE_LINE.matcher(stdout).find()) {
            throw new AssertionError(name + " reported an error: " + tail(stderr + stdout));
        }
        return stdout;
    }

    static String tail(String s) {
        s = s.strip();
        return s.length() > 400 ? "..." + s.substring(s.length() - 400) : s;
    }

    static List<String> lines(String s) {
        return s.lines().map(String::strip).filter(l -> !l.isEmpty()).collect(Collectors.toList());
    }

    /** kafka-topics --describe lines for single partitions. */
    static List<String> partitionLines(String out) {
        return lines(out).stream().filter(l -> l.contains("Partition: ")).collect(Collectors.toList());
    }

    /** kafka-get-offsets output "topic:partition:offset" as partition -> offset. */
    static Map<Integer, Long> offsets(String out) {
        Map<Integer, Long> m = new HashMap<>();
        for (String line : lines(out)) {
            String[] parts = line.split(":");
            Report.check(parts.length == 3 && parts[0].equals(topic), "unexpected line: " + line);
            m.put(Integer.parseInt(parts[1]), Long.parseLong(parts[2]));
        }
        return m;
    }

    /** Rows of a kafka-consumer-groups table for our group and topic: GROUP TOPIC PARTITION ... */
    static List<String[]> groupRows(String out) {
        List<String[]> rows = new ArrayList<>();
        for (String line : lines(out)) {
            String[] cols = line.split("\\s+");
            if (cols.length >= 4 && cols[0].equals(group) && cols[1].equals(topic)) {
                rows.add(cols);
            }
        }
        return rows;
    }

    static String show(List<String[]> rows) {
        return rows.stream().map(r -> String.join(" ", r)).collect(Collectors.joining("; "));
    }

    static void check(boolean condition, String message) {
        Report.check(condition, message);
    }
}
