// Exactly-once copier for the transaction tests: the classic
// consume-transform-produce loop of the Java client, with its default
// settings except the timeouts.
//
//   TxnCopier BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP TRANSACTIONAL_ID TOTAL PROGRESS_FILE
//     Reads IN_TOPIC (read_committed, group GROUP, offsets committed only
//     through the transactions) and writes every record, key and value
//     unchanged, to the same partition of OUT_TOPIC; each poll's records go
//     into one transaction together with the group's offsets
//     (sendOffsetsToTransaction with the consumer's group metadata). Every
//     7th transaction is aborted on purpose after its records were sent (and
//     the consumer rewound to the committed offsets), so the output topic
//     holds aborted records that read_committed consumers must skip. After
//     each commit, appends "<records copied so far by committed transactions
//     of this process>" to PROGRESS_FILE. Exits 0 once the group's committed
//     offsets add up to TOTAL; 3 when fenced by a newer copier with the same
//     TRANSACTIONAL_ID; 1 on any other fatal error. Abortable errors (a
//     broker restart under the transaction) abort, rewind and go on.

import java.io.BufferedWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public final class TxnCopier {
    static final String TIMEOUT_MS = "300000";

    public static void main(String[] args) throws Exception {
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        if (args.length != 7) {
            System.err.println(
                    "usage: TxnCopier BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP TRANSACTIONAL_ID TOTAL PROGRESS_FILE");
            System.exit(2);
        }
        System.exit(copy(args[0], args[1], args[2], args[3], args[4], Long.parseLong(args[5]), Path.of(args[6])));
    }

    static int copy(String bootstrap, String in, String out, String group, String txnId, long total, Path progress)
            throws Exception {
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        c.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "500");
        // A killed copier's member leaves the group sooner than the 45 s default.
        c.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
        c.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, TIMEOUT_MS);
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, TIMEOUT_MS);
        long copied = 0;
        long transactions = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c, new StringDeserializer(),
                new StringDeserializer());
             KafkaProducer<String, String> producer = new KafkaProducer<>(p, new StringSerializer(),
                     new StringSerializer());
             BufferedWriter log = Files.newBufferedWriter(progress, StandardCharsets.UTF_8,
                     StandardOpenOption.CREATE, StandardOpenOption.APPEND)) {
            producer.initTransactions();
            consumer.subscribe(List.of(in), new ConsumerRebalanceListener() {
                public void onPartitionsRevoked(Collection<TopicPartition> partitions) {}
                public void onPartitionsAssigned(Collection<TopicPartition> partitions) {}
            });
            long idleSince = System.nanoTime();
            while (true) {
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(500));
                if (records.isEmpty()) {
                    if (committedTotal(consumer, in) >= total) {
                        System.err.printf("copier %s: done, %d records in %d transactions%n", txnId, copied,
                                transactions);
                        return 0;
                    }
                    if (System.nanoTime() - idleSince > 120_000_000_000L) {
                        System.err.printf("copier %s: no progress for 120 s%n", txnId);
                        return 1;
                    }
                    continue;
                }
                idleSince = System.nanoTime();
                transactions++;
                boolean abortOnPurpose = transactions % 7 == 0;
                try {
                    producer.beginTransaction();
                    Map<TopicPartition, OffsetAndMetadata> next = new HashMap<>();
                    for (ConsumerRecord<String, String> r : records) {
                        producer.send(new ProducerRecord<>(out, r.partition(), r.key(), r.value()));
                        next.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                    }
                    producer.sendOffsetsToTransaction(next, consumer.groupMetadata());
                    if (abortOnPurpose) {
                        producer.flush();
                        producer.abortTransaction();
                        rewind(consumer);
                        continue;
                    }
                    producer.commitTransaction();
                    copied += records.count();
                    log.write(Long.toString(copied));
                    log.newLine();
                    log.flush();
                } catch (ProducerFencedException | InvalidProducerEpochException e) {
                    System.err.printf("copier %s: fenced: %s%n", txnId, e);
                    return 3;
                } catch (KafkaException e) {
                    // Abortable: give the transaction up and read again from
                    // the committed offsets.
                    System.err.printf("copier %s: aborting after %s%n", txnId, e);
                    try {
                        producer.abortTransaction();
                    } catch (ProducerFencedException | InvalidProducerEpochException fenced) {
                        System.err.printf("copier %s: fenced: %s%n", txnId, fenced);
                        return 3;
                    } catch (KafkaException fatal) {
                        System.err.printf("copier %s: cannot abort: %s%n", txnId, fatal);
                        return 1;
                    }
                    rewind(consumer);
                }
            }
        }
    }

    /// Seeks every assigned partition back to the group's committed offset.
    static void rewind(KafkaConsumer<String, String> consumer) {
        Set<TopicPartition> assigned = consumer.assignment();
        Map<TopicPartition, OffsetAndMetadata> committed = consumer.committed(assigned);
        for (TopicPartition tp : assigned) {
            OffsetAndMetadata at = committed.get(tp);
            if (at == null) {
                consumer.seekToBeginning(List.of(tp));
            } else {
                consumer.seek(tp, at.offset());
            }
        }
    }

    /// The group's committed offsets of `topic`, summed (records copied).
    static long committedTotal(KafkaConsumer<String, String> consumer, String topic) {
        Set<TopicPartition> all = new java.util.HashSet<>();
        consumer.partitionsFor(topic).forEach(info -> all.add(new TopicPartition(topic, info.partition())));
        long sum = 0;
        for (OffsetAndMetadata at : consumer.committed(all).values()) {
            if (at != null) {
                sum += at.offset();
            }
        }
        return sum;
    }
}
