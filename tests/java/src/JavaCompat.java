// Compatibility report card for the Java client (org.apache.kafka:kafka-clients),
// the client the Kafka project ships and the one most JVM applications use.
//
// Usage: JavaCompat BOOTSTRAP PREFIX
//
// Runs scenarios against the broker at BOOTSTRAP, each on its own topics and
// groups named PREFIX-..., each checking the data end to end and catching its
// own failure. Clients keep their DEFAULT settings (the producer is idempotent
// with acks=all) unless a scenario is about a setting. Progress goes to stderr;
// the last line on stdout is one JSON object:
//   {"client": "Java (kafka-clients)", "version": "kafka-clients 4.4.0",
//    "results": {scenario: "pass" | "fail: reason"}}
// Validated against Apache Kafka 4.4.0 (scripts/kafka-ref.sh).

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.CreateTopicsResult;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.ProducerState;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;

public final class JavaCompat {
    static String bootstrap;
    static String prefix;
    static Admin admin;
    static final Report REPORT = new Report(60);
    static final long WAIT_MS = 30_000;

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: JavaCompat BOOTSTRAP PREFIX");
            System.exit(2);
        }
        // Client INFO logging would drown the progress lines (slf4j-simple reads this once).
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        bootstrap = args[0];
        prefix = args[1];
        long started = System.nanoTime();
        Properties adminProps = new Properties();
        adminProps.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        admin = Admin.create(adminProps);

        String data = prefix + "-data";
        scenario("setup: a topic with 3 partitions and 5 records each", () -> {
            createTopic(data, 3, Map.of());
            List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>();
            for (int p = 0; p < 3; p++) {
                for (int i = 0; i < 5; i++) {
                    records.add(new ProducerRecord<>(data, p, null, bytes("t-" + p + "-" + i)));
                }
            }
            produce(records, Map.of());
        });

        scenario("admin: create, list and delete topics", () -> adminTopics());
        scenario("admin: describe topic configs", () -> describeConfigs(data));
        scenario("admin: incrementalAlterConfigs, describe shows DYNAMIC_TOPIC_CONFIG", () -> alterConfigs());
        scenario("admin: create topic with configs (compact, delete.retention.ms, min.compaction.lag.ms, segment.ms)",
                () -> createWithConfigs());
        scenario("admin: createPartitions increases the count", () -> createPartitions());
        for (String codec : List.of("none", "gzip", "snappy", "lz4", "zstd")) {
            scenario("produce and consume: " + codec + ", keys, headers, null values", () -> codec(codec));
        }
        scenario("idempotent producer: 1000 records in order", () -> idempotent());
        scenario("large message near the 1 MB limit", () -> largeMessage());
        scenario("consume from earliest, latest and a timestamp", () -> positions());
        scenario("consumer group: rebalance on join and leave", () -> rebalance("classic"));
        scenario("consumer group (group.protocol=consumer, KIP-848): rebalance on join and leave", () -> rebalance("consumer"));
        scenario("offset commit and fetch", () -> commits(data));
        scenario("admin: list and describe groups", () -> listAndDescribeGroups(data));
        scenario("admin: delete records moves the earliest offset", () -> deleteRecords());
        scenario("admin: listOffsets earliest, latest, max-timestamp, timestamp", () -> listOffsets());
        scenario("admin: describeCluster", () -> describeCluster());
        scenario("admin: deleteConsumerGroupOffsets and deleteConsumerGroups", () -> deleteGroups(data));
        scenario("admin: describeProducers after an idempotent producer", () -> describeProducers());
        scenario("transactions: commit and abort, read_committed skips the aborted records", () -> transactions());
        scenario("transactions: a new producer with the same transactional.id fences the old one", () -> fencing());
        scenario("transactions: sendOffsetsToTransaction commits the group's offsets on commit only",
                () -> transactionalOffsets());
        scenario("admin: listTransactions, describeTransactions, describeProducers with an open transaction",
                () -> describeTransactions());

        admin.close(Duration.ofSeconds(5));
        System.err.printf("== %d/%d scenarios passed in %.1f s%n", REPORT.passed(), REPORT.size(),
                (System.nanoTime() - started) / 1e9);
        System.out.println(REPORT.json("Java (kafka-clients)", "kafka-clients " + clientVersion()));
        System.out.flush();
        System.exit(0); // abandoned (timed out) scenarios may still hold client threads
    }

    // ------------------------------------------------------------------ scenarios

    static void adminTopics() throws Exception {
        String name = prefix + "-admin";
        createTopic(name, 2, Map.of("retention.ms", "-1"));
        check(admin.listTopics().names().get(30, TimeUnit.SECONDS).contains(name), "created topic is listed");
        TopicDescription d = admin.describeTopics(List.of(name)).allTopicNames().get(30, TimeUnit.SECONDS).get(name);
        check(d.partitions().size() == 2, "described with 2 partitions, got " + d.partitions().size());
        check(d.partitions().stream().allMatch(p -> p.leader() != null && !p.leader().isEmpty()),
                "every partition has a leader: " + d.partitions());
        admin.deleteTopics(List.of(name)).all().get(30, TimeUnit.SECONDS);
        waitFor(() -> !admin.listTopics().names().get(30, TimeUnit.SECONDS).contains(name),
                "deleted topic disappears from listTopics");
    }

    static void describeConfigs(String topic) throws Exception {
        Config config = topicConfig(topic);
        for (String key : List.of("max.message.bytes", "retention.ms", "cleanup.policy", "segment.bytes")) {
            ConfigEntry e = config.get(key);
            check(e != null, key + " is described");
            check(e.source() == ConfigEntry.ConfigSource.DEFAULT_CONFIG && e.isDefault(),
                    key + " is flagged DEFAULT_CONFIG, got " + e.source());
        }
        check("delete".equals(config.get("cleanup.policy").value()),
                "cleanup.policy defaults to delete, got " + config.get("cleanup.policy").value());
        check(config.entries().size() >= 20, "a full set of topic configs, got " + config.entries().size());
    }

    static void alterConfigs() throws Exception {
        String topic = prefix + "-alter";
        createTopic(topic, 1, Map.of());
        ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        admin.incrementalAlterConfigs(Map.of(resource, List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", "3600000"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("max.message.bytes", "2000000"), AlterConfigOp.OpType.SET))))
                .all().get(30, TimeUnit.SECONDS);
        waitFor(() -> {
            Config c = topicConfig(topic);
            return "3600000".equals(c.get("retention.ms").value())
                    && c.get("retention.ms").source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG
                    && "2000000".equals(c.get("max.message.bytes").value())
                    && c.get("max.message.bytes").source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG;
        }, "describe shows the new values with source DYNAMIC_TOPIC_CONFIG");
        admin.incrementalAlterConfigs(Map.of(resource, List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE))))
                .all().get(30, TimeUnit.SECONDS);
        waitFor(() -> {
            Config c = topicConfig(topic);
            return c.get("retention.ms").source() != ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG
                    && c.get("max.message.bytes").source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG;
        }, "a DELETE op reverts retention.ms to its default and keeps max.message.bytes");
    }

    static void createWithConfigs() throws Exception {
        String topic = prefix + "-configured";
        Map<String, String> wanted = Map.of("cleanup.policy", "compact", "delete.retention.ms", "3600000",
                "min.compaction.lag.ms", "1000", "segment.ms", "600000");
        CreateTopicsResult created = admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1).configs(wanted)));
        created.all().get(30, TimeUnit.SECONDS);
        Config returned = created.config(topic).get(30, TimeUnit.SECONDS);
        Config described = topicConfig(topic);
        for (Map.Entry<String, String> w : wanted.entrySet()) {
            check(w.getValue().equals(returned.get(w.getKey()).value()),
                    "CreateTopics response: " + w.getKey() + "=" + returned.get(w.getKey()).value());
            ConfigEntry e = described.get(w.getKey());
            check(w.getValue().equals(e.value()) && e.source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG,
                    "describe: " + w.getKey() + "=" + e.value() + " (" + e.source() + ")");
        }
        // A compacted topic takes keyed records.
        produce(List.of(new ProducerRecord<>(topic, 0, bytes("k"), bytes("v"))), Map.of());
        List<ConsumerRecord<byte[], byte[]>> got = consumeAssigned(topic, 0, 0, 1, Map.of());
        check(got.size() == 1 && "v".equals(str(got.get(0).value())), "keyed record round-trips");
    }

    static void createPartitions() throws Exception {
        String topic = prefix + "-grow";
        createTopic(topic, 1, Map.of());
        admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(3))).all().get(30, TimeUnit.SECONDS);
        waitFor(() -> admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS)
                .get(topic).partitions().size() == 3, "describeTopics shows 3 partitions");
        produce(List.of(new ProducerRecord<>(topic, 2, null, bytes("in-new-partition"))), Map.of());
        List<ConsumerRecord<byte[], byte[]>> got = consumeAssigned(topic, 2, 0, 1, Map.of());
        check(got.size() == 1 && "in-new-partition".equals(str(got.get(0).value())),
                "a record round-trips through the new partition 2");
    }

    static void codec(String codec) throws Exception {
        String topic = prefix + "-codec-" + codec;
        createTopic(topic, 1, Map.of());
        List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>();
        for (int i = 0; i < 50; i++) {
            List<Header> headers = List.of(new RecordHeader("h", bytes(Integer.toString(i))),
                    new RecordHeader("codec", bytes(codec)));
            records.add(new ProducerRecord<>(topic, 0, bytes("k" + i), codecValue(codec, i), headers));
        }
        produce(records, Map.of(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec));
        List<ConsumerRecord<byte[], byte[]>> got = consumeAssigned(topic, 0, 0, 50, Map.of());
        check(got.size() == 50, "consumed " + got.size() + " of 50");
        for (int i = 0; i < 50; i++) {
            ConsumerRecord<byte[], byte[]> r = got.get(i);
            check(r.offset() == i, "offset " + r.offset() + " at " + i);
            check(("k" + i).equals(str(r.key())), "key " + i + ": " + str(r.key()));
            check(Arrays.equals(codecValue(codec, i), r.value()), "value " + i + ": " + str(r.value()));
            List<String> headers = new ArrayList<>();
            for (Header h : r.headers()) {
                headers.add(h.key() + "=" + str(h.value()));
            }
            check(headers.equals(List.of("h=" + i, "codec=" + codec)), "headers " + i + ": " + headers);
        }
    }

    static byte[] codecValue(String codec, int i) {
        // Null values every tenth record; the others long and repetitive enough to compress.
        return i % 10 == 3 ? null : bytes((codec + "-" + i + "-").repeat(20));
    }

    static void idempotent() throws Exception {
        String topic = prefix + "-idem";
        createTopic(topic, 1, Map.of());
        List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>();
        for (int i = 0; i < 1000; i++) {
            records.add(new ProducerRecord<>(topic, 0, null, bytes(Integer.toString(i))));
        }
        List<RecordMetadata> acked = produce(records, Map.of());
        for (int i = 0; i < 1000; i++) {
            check(acked.get(i).offset() == i, "record " + i + " acked at offset " + acked.get(i).offset());
        }
        List<ConsumerRecord<byte[], byte[]>> got = consumeAssigned(topic, 0, 0, 1000, Map.of());
        check(got.size() == 1000, "consumed " + got.size() + " of 1000");
        for (int i = 0; i < 1000; i++) {
            check(Integer.toString(i).equals(str(got.get(i).value())) && got.get(i).offset() == i,
                    "record " + i + " is " + str(got.get(i).value()) + " at " + got.get(i).offset());
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of())) {
            TopicPartition tp = new TopicPartition(topic, 0);
            long end = c.endOffsets(List.of(tp)).get(tp);
            check(end == 1000, "end offset 1000 (no duplicates), got " + end);
        }
    }

    static void largeMessage() throws Exception {
        String topic = prefix + "-large";
        createTopic(topic, 1, Map.of());
        byte[] big = new byte[1_000_000];
        new Random(42).nextBytes(big);
        produce(List.of(new ProducerRecord<>(topic, 0, null, big)), Map.of());
        List<ConsumerRecord<byte[], byte[]>> got = consumeAssigned(topic, 0, 0, 1, Map.of());
        check(got.size() == 1 && Arrays.equals(big, got.get(0).value()), "a 1,000,000-byte value round-trips");
    }

    static void positions() throws Exception {
        String topic = prefix + "-positions";
        createTopic(topic, 1, Map.of());
        TopicPartition tp = new TopicPartition(topic, 0);
        long base = System.currentTimeMillis() - 100_000;
        List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>();
        for (int i = 0; i < 20; i++) {
            records.add(new ProducerRecord<>(topic, 0, base + i * 1000L, null, bytes("v" + i)));
        }
        produce(records, Map.of());
        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of(ConsumerConfig.GROUP_ID_CONFIG, prefix + "-pos-earliest",
                ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest"))) {
            check(c.beginningOffsets(List.of(tp)).get(tp) == 0, "beginningOffsets 0");
            check(c.endOffsets(List.of(tp)).get(tp) == 20, "endOffsets 20");
            c.assign(List.of(tp));
            check(c.position(tp) == 0, "auto.offset.reset=earliest starts at 0, got " + c.position(tp));
            List<ConsumerRecord<byte[], byte[]>> got = pollFor(c, 1);
            check("v0".equals(str(got.get(0).value())) && got.get(0).timestamp() == base, "first record v0 at base");
            Map<TopicPartition, OffsetAndTimestamp> found = c.offsetsForTimes(Map.of(tp, base + 7500));
            check(found.get(tp) != null && found.get(tp).offset() == 8 && found.get(tp).timestamp() == base + 8000,
                    "offsetsForTimes(base+7.5s) is offset 8, got " + found.get(tp));
            c.seek(tp, found.get(tp).offset());
            got = pollFor(c, 2);
            check(got.size() >= 2 && "v8".equals(str(got.get(0).value())) && "v9".equals(str(got.get(1).value())),
                    "reading from the offset for the timestamp gives v8, v9");
            Map<TopicPartition, OffsetAndTimestamp> none = c.offsetsForTimes(Map.of(tp, base + 60_000));
            check(none.get(tp) == null, "no offset for a timestamp after the last record, got " + none.get(tp));
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of(ConsumerConfig.GROUP_ID_CONFIG, prefix + "-pos-latest",
                ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "latest"))) {
            c.assign(List.of(tp));
            check(c.position(tp) == 20, "auto.offset.reset=latest starts at 20, got " + c.position(tp));
            produce(List.of(new ProducerRecord<>(topic, 0, null, bytes("v20"))), Map.of());
            List<ConsumerRecord<byte[], byte[]>> got = pollFor(c, 1);
            check(got.size() == 1 && got.get(0).offset() == 20 && "v20".equals(str(got.get(0).value())),
                    "a latest consumer sees only the new record");
        }
    }

    static void rebalance(String protocol) throws Exception {
        String topic = prefix + "-group-" + protocol;
        createTopic(topic, 4, Map.of());
        Map<String, String> conf = Map.of(ConsumerConfig.GROUP_ID_CONFIG, prefix + "-g-" + protocol,
                ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol, ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        Set<String> first = produceBatch(topic, 4, "a", 40);
        try (Member a = new Member("a-" + protocol, conf, topic)) {
            waitFor(() -> a.check().assignment.get().size() == 4 && a.seen.containsAll(first),
                    "one member owns all 4 partitions and reads the first 40 records");
            Set<String> second;
            try (Member b = new Member("b-" + protocol, conf, topic)) {
                waitFor(() -> a.check().assignment.get().size() == 2 && b.check().assignment.get().size() == 2,
                        "two members share 4 partitions 2 and 2");
                Set<TopicPartition> union = new HashSet<>(a.assignment.get());
                union.addAll(b.assignment.get());
                check(union.size() == 4, "the two assignments cover all partitions: " + union);
                second = produceBatch(topic, 4, "b", 40);
                waitFor(() -> {
                    Set<String> both = new HashSet<>(a.check().seen);
                    both.addAll(b.check().seen);
                    return both.containsAll(second);
                }, "the two members together read the next 40 records");
                check(second.stream().anyMatch(a.seen::contains) && second.stream().anyMatch(b.seen::contains),
                        "both members read some of them");
            }
            waitFor(() -> a.check().assignment.get().size() == 4, "the survivor owns all 4 partitions again");
            Set<String> third = produceBatch(topic, 4, "c", 40);
            waitFor(() -> a.check().seen.containsAll(third), "the survivor reads the last 40 records");
        }
    }

    static void commits(String topic) throws Exception {
        String group = prefix + "-commits";
        TopicPartition tp = new TopicPartition(topic, 1);
        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of(ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false"))) {
            c.assign(List.of(tp));
            c.commitSync(Map.of(tp, new OffsetAndMetadata(3, "checkpoint")));
            OffsetAndMetadata committed = c.committed(Set.of(tp)).get(tp);
            check(committed != null && committed.offset() == 3 && "checkpoint".equals(committed.metadata()),
                    "committed() returns offset 3 with metadata, got " + committed);
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of(ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false"))) {
            c.assign(List.of(tp));
            List<ConsumerRecord<byte[], byte[]>> got = pollFor(c, 2);
            check(got.size() == 2 && got.get(0).offset() == 3 && "t-1-3".equals(str(got.get(0).value())),
                    "a new consumer of the group resumes at the committed offset");
        }
        Map<TopicPartition, OffsetAndMetadata> listed = admin.listConsumerGroupOffsets(group)
                .partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
        check(listed.size() == 1 && listed.get(tp).offset() == 3 && "checkpoint".equals(listed.get(tp).metadata()),
                "admin listConsumerGroupOffsets: " + listed);
    }

    @SuppressWarnings({"deprecation", "removal"}) // listConsumerGroups is deprecated in 4.x, still widely used
    static void listAndDescribeGroups(String topic) throws Exception {
        String classic = prefix + "-live-classic";
        String modern = prefix + "-live-consumer";
        try (Member c = new Member("live-classic", Map.of(ConsumerConfig.GROUP_ID_CONFIG, classic), topic);
             Member m = new Member("live-consumer", Map.of(ConsumerConfig.GROUP_ID_CONFIG, modern,
                     ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer"), topic)) {
            waitFor(() -> c.check().assignment.get().size() == 3 && m.check().assignment.get().size() == 3,
                    "both live groups have their single member assigned 3 partitions");

            Map<String, GroupListing> listed = admin.listGroups(org.apache.kafka.clients.admin.ListGroupsOptions
                    .forConsumerGroups()).all().get(30, TimeUnit.SECONDS).stream()
                    .collect(Collectors.toMap(GroupListing::groupId, g -> g));
            for (String g : List.of(classic, modern, prefix + "-commits")) {
                check(listed.containsKey(g), "listGroups(forConsumerGroups) lists " + g + ": " + listed.keySet());
            }
            check(listed.get(classic).type().equals(Optional.of(GroupType.CLASSIC)), "classic type: " + listed.get(classic));
            check(listed.get(modern).type().equals(Optional.of(GroupType.CONSUMER)), "consumer type: " + listed.get(modern));
            check(listed.get(classic).groupState().equals(Optional.of(GroupState.STABLE)), "stable: " + listed.get(classic));
            check(listed.get(prefix + "-commits").groupState().equals(Optional.of(GroupState.EMPTY)),
                    "the commit-only group is empty: " + listed.get(prefix + "-commits"));

            Set<String> old = admin.listConsumerGroups().all().get(30, TimeUnit.SECONDS).stream()
                    .map(l -> l.groupId()).collect(Collectors.toSet());
            check(old.containsAll(List.of(classic, modern)), "listConsumerGroups lists both: " + old);

            Map<String, ConsumerGroupDescription> described = admin.describeConsumerGroups(List.of(classic, modern))
                    .all().get(30, TimeUnit.SECONDS);
            for (String g : List.of(classic, modern)) {
                ConsumerGroupDescription d = described.get(g);
                check(d.groupState() == GroupState.STABLE, g + " state " + d.groupState());
                check(d.type() == (g.equals(classic) ? GroupType.CLASSIC : GroupType.CONSUMER), g + " type " + d.type());
                check(d.members().size() == 1, g + " members " + d.members());
                MemberDescription member = d.members().iterator().next();
                check(member.assignment().topicPartitions().size() == 3
                        && member.assignment().topicPartitions().stream().allMatch(tp -> tp.topic().equals(topic)),
                        g + " member assignment " + member.assignment());
                check(d.coordinator() != null && !d.coordinator().isEmpty(), g + " coordinator " + d.coordinator());
            }
        }
    }

    static void deleteRecords() throws Exception {
        String topic = prefix + "-trim";
        createTopic(topic, 1, Map.of());
        TopicPartition tp = new TopicPartition(topic, 0);
        produce(valueRecords(topic, 0, "v", 10), Map.of());
        long low = admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(4))).lowWatermarks().get(tp)
                .get(30, TimeUnit.SECONDS).lowWatermark();
        check(low == 4, "deleteRecords returns low watermark 4, got " + low);
        Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> earliest =
                admin.listOffsets(Map.of(tp, OffsetSpec.earliest())).all().get(30, TimeUnit.SECONDS);
        check(earliest.get(tp).offset() == 4, "listOffsets earliest is 4, got " + earliest.get(tp).offset());
        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest"))) {
            c.assign(List.of(tp));
            c.seek(tp, 0);
            List<ConsumerRecord<byte[], byte[]>> got = pollFor(c, 6);
            check(got.size() == 6 && got.get(0).offset() == 4 && "v4".equals(str(got.get(0).value())),
                    "consuming from 0 with auto.offset.reset=earliest starts at offset 4: "
                            + got.stream().map(ConsumerRecord::offset).collect(Collectors.toList()));
        }
    }

    static void listOffsets() throws Exception {
        String topic = prefix + "-offsets";
        createTopic(topic, 1, Map.of());
        TopicPartition tp = new TopicPartition(topic, 0);
        long base = System.currentTimeMillis() - 100_000;
        long[] seconds = {1, 5, 2, 3, 4}; // the maximum timestamp is at offset 1
        List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>();
        for (int i = 0; i < seconds.length; i++) {
            records.add(new ProducerRecord<>(topic, 0, base + seconds[i] * 1000, null, bytes("v" + i)));
        }
        produce(records, Map.of());
        Map<String, OffsetSpec> specs = new LinkedHashMap<>();
        specs.put("earliest", OffsetSpec.earliest());
        specs.put("latest", OffsetSpec.latest());
        specs.put("max-timestamp", OffsetSpec.maxTimestamp());
        specs.put("timestamp base+2.5s", OffsetSpec.forTimestamp(base + 2500));
        specs.put("timestamp after the last", OffsetSpec.forTimestamp(base + 60_000));
        Map<String, Long> offsets = new LinkedHashMap<>();
        Map<String, Long> timestamps = new LinkedHashMap<>();
        for (Map.Entry<String, OffsetSpec> s : specs.entrySet()) {
            ListOffsetsResult.ListOffsetsResultInfo info = admin.listOffsets(Map.of(tp, s.getValue()))
                    .partitionResult(tp).get(30, TimeUnit.SECONDS);
            offsets.put(s.getKey(), info.offset());
            timestamps.put(s.getKey(), info.timestamp());
        }
        Map<String, Long> expected = new LinkedHashMap<>();
        expected.put("earliest", 0L);
        expected.put("latest", 5L);
        expected.put("max-timestamp", 1L);
        expected.put("timestamp base+2.5s", 1L); // the first record at or after the time
        expected.put("timestamp after the last", -1L);
        check(offsets.equals(expected), "offsets " + offsets + ", expected " + expected);
        check(timestamps.get("max-timestamp") == base + 5000, "max-timestamp timestamp " + timestamps.get("max-timestamp"));
    }

    static void describeCluster() throws Exception {
        DescribeClusterResult r = admin.describeCluster();
        String clusterId = r.clusterId().get(30, TimeUnit.SECONDS);
        Collection<Node> nodes = r.nodes().get(30, TimeUnit.SECONDS);
        Node controller = r.controller().get(30, TimeUnit.SECONDS);
        check(clusterId != null && !clusterId.isEmpty(), "cluster id " + clusterId);
        check(!nodes.isEmpty() && nodes.stream().allMatch(n -> n.id() >= 0 && !n.host().isEmpty() && n.port() > 0),
                "nodes " + nodes);
        check(controller == null || controller.isEmpty() || nodes.contains(controller),
                "controller " + controller + " is one of the nodes " + nodes);
    }

    static void deleteGroups(String topic) throws Exception {
        String group = prefix + "-del";
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of(ConsumerConfig.GROUP_ID_CONFIG, group))) {
            c.commitSync(Map.of(p0, new OffsetAndMetadata(2), p1, new OffsetAndMetadata(2)));
        }
        admin.deleteConsumerGroupOffsets(group, Set.of(p0)).all().get(30, TimeUnit.SECONDS);
        Map<TopicPartition, OffsetAndMetadata> left = admin.listConsumerGroupOffsets(group)
                .partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
        check(left.keySet().equals(Set.of(p1)) && left.get(p1).offset() == 2, "offsets left: " + left);
        admin.deleteConsumerGroups(List.of(group)).all().get(30, TimeUnit.SECONDS);
        Set<String> groups = admin.listGroups().all().get(30, TimeUnit.SECONDS).stream()
                .map(GroupListing::groupId).collect(Collectors.toSet());
        check(!groups.contains(group), "the deleted group is not listed");
        try {
            ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).describedGroups().get(group)
                    .get(30, TimeUnit.SECONDS);
            check(d.groupState() == GroupState.DEAD, "the deleted group is dead, got " + d.groupState());
        } catch (ExecutionException e) {
            check(e.getCause() instanceof GroupIdNotFoundException, "describe after delete: " + e.getCause());
        }
        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of(ConsumerConfig.GROUP_ID_CONFIG, group))) {
            OffsetAndMetadata committed = c.committed(Set.of(p1)).get(p1);
            check(committed == null, "no committed offset after the delete, got " + committed);
        }
    }

    static void describeProducers() throws Exception {
        TopicPartition tp = new TopicPartition(prefix + "-idem", 0);
        List<ProducerState> states = admin.describeProducers(List.of(tp)).partitionResult(tp)
                .get(30, TimeUnit.SECONDS).activeProducers();
        check(states.size() == 1, "one active producer, got " + states);
        ProducerState s = states.get(0);
        check(s.producerId() >= 0 && s.producerEpoch() >= 0, "producer id and epoch " + s);
        check(s.lastSequence() == 999, "last sequence 999 after 1000 records, got " + s.lastSequence());
        check(s.currentTransactionStartOffset().isEmpty(), "no open transaction " + s);
    }

    static KafkaProducer<byte[], byte[]> transactionalProducer(String id) {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, id);
        KafkaProducer<byte[], byte[]> p = new KafkaProducer<>(props, new ByteArraySerializer(),
                new ByteArraySerializer());
        p.initTransactions();
        return p;
    }

    static List<String> values(List<ConsumerRecord<byte[], byte[]>> records) {
        return records.stream().map(r -> str(r.value())).collect(Collectors.toList());
    }

    static void transactions() throws Exception {
        String topic = prefix + "-txn";
        createTopic(topic, 1, Map.of());
        try (KafkaProducer<byte[], byte[]> p = transactionalProducer(prefix + "-txn")) {
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, 0, null, bytes("a1")));
            p.send(new ProducerRecord<>(topic, 0, null, bytes("a2")));
            p.commitTransaction();
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, 0, null, bytes("b1")));
            p.flush();
            p.abortTransaction();
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, 0, null, bytes("c1")));
            p.commitTransaction();
        }
        List<String> committed = values(consumeAssigned(topic, 0, 0, 3,
                Map.of(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed")));
        check(committed.equals(List.of("a1", "a2", "c1")), "read_committed reads a1 a2 c1, got " + committed);
        List<String> all = values(consumeAssigned(topic, 0, 0, 4,
                Map.of(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_uncommitted")));
        check(all.equals(List.of("a1", "a2", "b1", "c1")), "read_uncommitted reads a1 a2 b1 c1, got " + all);
        try (KafkaConsumer<byte[], byte[]> c = consumer(Map.of(ConsumerConfig.ISOLATION_LEVEL_CONFIG,
                "read_committed"))) {
            TopicPartition tp = new TopicPartition(topic, 0);
            long end = c.endOffsets(List.of(tp)).get(tp);
            // 4 records and 3 markers.
            check(end == 7, "end offset 7 (4 records, 3 transaction markers), got " + end);
        }
    }

    static void fencing() throws Exception {
        String topic = prefix + "-fence";
        createTopic(topic, 1, Map.of());
        String id = prefix + "-fence";
        KafkaProducer<byte[], byte[]> zombie = transactionalProducer(id);
        try {
            zombie.beginTransaction();
            zombie.send(new ProducerRecord<>(topic, 0, null, bytes("zombie"))).get(30, TimeUnit.SECONDS);
            try (KafkaProducer<byte[], byte[]> fresh = transactionalProducer(id)) {
                fresh.beginTransaction();
                fresh.send(new ProducerRecord<>(topic, 0, null, bytes("fresh")));
                fresh.commitTransaction();
            }
            boolean fenced = false;
            try {
                zombie.send(new ProducerRecord<>(topic, 0, null, bytes("late")));
                zombie.commitTransaction();
            } catch (org.apache.kafka.common.errors.ProducerFencedException
                    | org.apache.kafka.common.errors.InvalidProducerEpochException e) {
                fenced = true;
            } catch (org.apache.kafka.common.KafkaException e) {
                fenced = e.getCause() instanceof org.apache.kafka.common.errors.ProducerFencedException
                        || e.getCause() instanceof org.apache.kafka.common.errors.InvalidProducerEpochException;
                check(fenced, "expected a fencing error, got " + describe(e));
            }
            check(fenced, "the old producer committed after being fenced");
        } finally {
            zombie.close(Duration.ZERO);
        }
        List<String> committed = values(consumeAssigned(topic, 0, 0, 1,
                Map.of(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed")));
        check(committed.equals(List.of("fresh")), "only the new producer's record is committed, got " + committed);
    }

    static void transactionalOffsets() throws Exception {
        String in = prefix + "-txn-in";
        String out = prefix + "-txn-out";
        String group = prefix + "-txn-group";
        createTopic(in, 1, Map.of());
        createTopic(out, 1, Map.of());
        TopicPartition tp = new TopicPartition(in, 0);
        try (KafkaProducer<byte[], byte[]> p = transactionalProducer(prefix + "-txn-offsets");
             KafkaConsumer<byte[], byte[]> c = consumer(Map.of(ConsumerConfig.GROUP_ID_CONFIG, group,
                     ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false"))) {
            p.beginTransaction();
            p.send(new ProducerRecord<>(out, 0, null, bytes("x")));
            p.sendOffsetsToTransaction(Map.of(tp, new OffsetAndMetadata(5)), c.groupMetadata());
            p.commitTransaction();
            p.beginTransaction();
            p.send(new ProducerRecord<>(out, 0, null, bytes("y")));
            p.sendOffsetsToTransaction(Map.of(tp, new OffsetAndMetadata(9)), c.groupMetadata());
            p.abortTransaction();
            OffsetAndMetadata committed = c.committed(Set.of(tp)).get(tp);
            check(committed != null && committed.offset() == 5,
                    "the committed transaction's offset 5 stands, the aborted 9 does not: " + committed);
        }
    }

    static void describeTransactions() throws Exception {
        String topic = prefix + "-txn-describe";
        String id = prefix + "-txn-describe";
        createTopic(topic, 1, Map.of());
        try (KafkaProducer<byte[], byte[]> p = transactionalProducer(id)) {
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, 0, null, bytes("open"))).get(30, TimeUnit.SECONDS);
            var description = admin.describeTransactions(List.of(id)).description(id).get(30, TimeUnit.SECONDS);
            check(description.state() == org.apache.kafka.clients.admin.TransactionState.ONGOING,
                    "state ONGOING, got " + description.state());
            check(description.topicPartitions().contains(new TopicPartition(topic, 0)),
                    "the partition is in the transaction: " + description.topicPartitions());
            var listed = admin.listTransactions().all().get(30, TimeUnit.SECONDS);
            check(listed.stream().anyMatch(t -> t.transactionalId().equals(id)),
                    "listTransactions shows " + id + ": " + listed);
            TopicPartition tp = new TopicPartition(topic, 0);
            List<ProducerState> states = admin.describeProducers(List.of(tp)).partitionResult(tp)
                    .get(30, TimeUnit.SECONDS).activeProducers();
            check(states.size() == 1 && states.get(0).currentTransactionStartOffset().orElse(-1L) == 0L,
                    "the open transaction starts at offset 0: " + states);
            p.commitTransaction();
            // Kafka writes its markers after answering EndTxn: PrepareCommit
            // for a moment, then CompleteCommit.
            waitFor(() -> admin.describeTransactions(List.of(id)).description(id).get(30, TimeUnit.SECONDS)
                    .state() == org.apache.kafka.clients.admin.TransactionState.COMPLETE_COMMIT,
                    "state COMPLETE_COMMIT after the commit");
        }
    }

    // ------------------------------------------------------------------ helpers

    /** A group member polling on its own thread; the KafkaConsumer never leaves that thread. */
    static final class Member implements AutoCloseable {
        final AtomicReference<Set<TopicPartition>> assignment = new AtomicReference<>(Set.of());
        final Set<String> seen = ConcurrentHashMap.newKeySet();
        final Thread thread;
        volatile boolean stop;
        volatile Throwable error;

        Member(String name, Map<String, String> conf, String topic) {
            thread = new Thread(() -> {
                try (KafkaConsumer<String, String> c = new KafkaConsumer<>(consumerProps(conf),
                        new StringDeserializer(), new StringDeserializer())) {
                    c.subscribe(List.of(topic));
                    while (!stop) {
                        for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(100))) {
                            seen.add(r.value());
                        }
                        assignment.set(Set.copyOf(c.assignment()));
                    }
                } catch (Throwable t) {
                    error = t;
                }
            }, "member-" + name);
            thread.setDaemon(true);
            thread.start();
        }

        /** Rethrows the member's failure, if any, so that waits end early. */
        Member check() {
            if (error != null) {
                throw new IllegalStateException("member " + thread.getName() + " failed: " + describe(error));
            }
            return this;
        }

        @Override
        public void close() throws InterruptedException {
            stop = true;
            thread.join(WAIT_MS);
            check();
        }
    }

    static Set<String> produceBatch(String topic, int partitions, String tag, int count) throws Exception {
        List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>();
        Set<String> values = new HashSet<>();
        for (int i = 0; i < count; i++) {
            String v = tag + "-" + i;
            values.add(v);
            records.add(new ProducerRecord<>(topic, i % partitions, null, bytes(v)));
        }
        produce(records, Map.of());
        return values;
    }

    static List<ProducerRecord<byte[], byte[]>> valueRecords(String topic, int partition, String tag, int count) {
        List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            records.add(new ProducerRecord<>(topic, partition, null, bytes(tag + i)));
        }
        return records;
    }

    static void createTopic(String name, int partitions, Map<String, String> configs) throws Exception {
        admin.createTopics(List.of(new NewTopic(name, partitions, (short) 1).configs(configs)))
                .all().get(30, TimeUnit.SECONDS);
    }

    static Config topicConfig(String topic) throws Exception {
        ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        return admin.describeConfigs(List.of(resource)).all().get(30, TimeUnit.SECONDS).get(resource);
    }

    /** Sends every record with a default producer plus {@code extra}; fails on any delivery error. */
    static List<RecordMetadata> produce(List<ProducerRecord<byte[], byte[]>> records, Map<String, String> extra)
            throws Exception {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.putAll(extra);
        List<Future<RecordMetadata>> futures = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> p = new KafkaProducer<>(props, new ByteArraySerializer(),
                new ByteArraySerializer())) {
            for (ProducerRecord<byte[], byte[]> r : records) {
                futures.add(p.send(r));
            }
            p.flush();
        }
        List<RecordMetadata> out = new ArrayList<>();
        for (Future<RecordMetadata> f : futures) {
            out.add(f.get(30, TimeUnit.SECONDS));
        }
        return out;
    }

    static Properties consumerProps(Map<String, String> extra) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.putAll(extra);
        return props;
    }

    static KafkaConsumer<byte[], byte[]> consumer(Map<String, String> extra) {
        return new KafkaConsumer<>(consumerProps(extra), new ByteArrayDeserializer(), new ByteArrayDeserializer());
    }

    /** Reads up to {@code count} records of one partition from {@code start} with a group-less consumer. */
    static List<ConsumerRecord<byte[], byte[]>> consumeAssigned(String topic, int partition, long start, int count,
            Map<String, String> extra) {
        try (KafkaConsumer<byte[], byte[]> c = consumer(extra)) {
            TopicPartition tp = new TopicPartition(topic, partition);
            c.assign(List.of(tp));
            c.seek(tp, start);
            return pollFor(c, count);
        }
    }

    /** Polls until {@code count} records arrived, or for a few seconds when fewer exist. */
    static <K, V> List<ConsumerRecord<K, V>> pollFor(KafkaConsumer<K, V> c, int count) {
        List<ConsumerRecord<K, V>> out = new ArrayList<>();
        long deadline = System.currentTimeMillis() + (count <= 1 ? 5_000 : 20_000);
        while (out.size() < count && System.currentTimeMillis() < deadline) {
            for (ConsumerRecord<K, V> r : c.poll(Duration.ofMillis(200))) {
                out.add(r);
            }
        }
        return out;
    }

    interface Condition {
        boolean test() throws Exception;
    }

    static void waitFor(Condition condition, String what) throws Exception {
        long deadline = System.currentTimeMillis() + WAIT_MS * 3 / 2;
        while (!condition.test()) {
            if (System.currentTimeMillis() > deadline) {
                throw new AssertionError("timed out waiting: " + what);
            }
            Thread.sleep(50);
        }
    }

    static void check(boolean condition, String message) {
        Report.check(condition, message);
    }

    static void scenario(String name, Report.Body body) {
        REPORT.scenario(name, body);
    }

    static String describe(Throwable t) {
        return Report.describe(t);
    }

    /** The version kafka-clients reports about itself (kafka/kafka-version.properties in its jar). */
    static String clientVersion() {
        try (java.io.InputStream in = KafkaProducer.class.getResourceAsStream("/kafka/kafka-version.properties")) {
            Properties p = new Properties();
            p.load(in);
            return p.getProperty("version", "unknown");
        } catch (Exception e) {
            return "unknown";
        }
    }

    static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static String str(byte[] b) {
        return b == null ? null : new String(b, StandardCharsets.UTF_8);
    }
}
