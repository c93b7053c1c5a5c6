// Load generator and reader for the broker crash test: the Java idempotent
// producer with its DEFAULT settings (enable.idempotence=true, acks=all,
// max.in.flight.requests.per.connection=5, retries=MAX) keeps producing while
// the broker is killed and restarted; afterwards every acknowledged record
// must be in the log exactly once and in order within its partition.
//
//   IdempotentLoad produce BOOTSTRAP TOPIC PARTITIONS COUNT ACKED_FILE
//     Sends records seq = 0..COUNT-1, key null, value = seq zero-padded to 10
//     digits, to partition seq % PARTITIONS. At most MAX_OUTSTANDING records
//     are unacknowledged at a time, so the load is steady and the producer's
//     buffer never holds the whole run. Appends each acknowledged seq to
//     ACKED_FILE (one per line, flushed) from the send callback. Only the
//     timeouts are raised (delivery.timeout.ms and max.block.ms = 300000) so
//     that a broker outage of a minute or more loses nothing. Exits 0 when all
//     records were acknowledged, 1 (with a message) when any send failed.
//
//   IdempotentLoad consume BOOTSTRAP TOPIC PARTITIONS OUT_FILE
//     Reads partitions 0..PARTITIONS-1 from the beginning up to the end
//     offsets found at the start (assign + seekToBeginning + endOffsets) and
//     writes one "partition offset value" line per record. Exits 1 when no
//     progress is made for 60 s.

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public final class IdempotentLoad {
    static final int MAX_OUTSTANDING = 1000;
    static final String TIMEOUT_MS = "300000";

    public static void main(String[] args) throws Exception {
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        if (args.length == 6 && args[0].equals("produce")) {
            System.exit(produce(args[1], args[2], Integer.parseInt(args[3]), Long.parseLong(args[4]), Path.of(args[5])));
        } else if (args.length == 5 && args[0].equals("consume")) {
            System.exit(consume(args[1], args[2], Integer.parseInt(args[3]), Path.of(args[4])));
        }
        System.err.println("usage: IdempotentLoad produce BOOTSTRAP TOPIC PARTITIONS COUNT ACKED_FILE\n"
                + "       IdempotentLoad consume BOOTSTRAP TOPIC PARTITIONS OUT_FILE");
        System.exit(2);
    }

    static int produce(String bootstrap, String topic, int partitions, long count, Path ackedFile) throws Exception {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, TIMEOUT_MS);
        props.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, TIMEOUT_MS);
        Semaphore window = new Semaphore(MAX_OUTSTANDING);
        AtomicLong acked = new AtomicLong();
        AtomicLong failed = new AtomicLong();
        AtomicReference<String> firstError = new AtomicReference<>();
        long started = System.nanoTime();
        try (BufferedWriter out = Files.newBufferedWriter(ackedFile, StandardCharsets.UTF_8,
                StandardOpenOption.CREATE, StandardOpenOption.APPEND);
             KafkaProducer<String, String> producer = new KafkaProducer<>(props, new StringSerializer(),
                     new StringSerializer())) {
            long lastReport = System.nanoTime();
            for (long seq = 0; seq < count; seq++) {
                window.acquire();
                final long s = seq;
                ProducerRecord<String, String> record = new ProducerRecord<>(topic, (int) (seq % partitions), null,
                        String.format("%010d", seq));
                try {
                    producer.send(record, (metadata, error) -> {
                        try {
                            if (error == null) {
                                // Callbacks run on the producer's I/O thread, one at a time.
                                out.write(Long.toString(s));
                                out.newLine();
                                out.flush();
                                acked.incrementAndGet();
                            } else {
                                fail(failed, firstError, s, error);
                            }
                        } catch (IOException e) {
                            fail(failed, firstError, s, e);
                        } finally {
                            window.release();
                        }
                    });
                } catch (RuntimeException e) {
                    window.release();
                    fail(failed, firstError, s, e);
                }
                if (System.nanoTime() - lastReport > 5_000_000_000L) {
                    lastReport = System.nanoTime();
                    System.err.printf("produce: %d sent, %d acked, %d failed%n", seq + 1, acked.get(), failed.get());
                }
            }
            producer.flush();
        }
        double seconds = (System.nanoTime() - started) / 1e9;
        System.err.printf("produce: %d records, %d acked, %d failed in %.1f s%n", count, acked.get(), failed.get(),
                seconds);
        if (failed.get() > 0 || acked.get() != count) {
            System.err.printf("produce: FAILED: %d of %d sends failed; first: %s%n", failed.get(), count,
                    firstError.get());
            return 1;
        }
        return 0;
    }

    static void fail(AtomicLong failed, AtomicReference<String> firstError, long seq, Throwable error) {
        failed.incrementAndGet();
        String message = "seq " + seq + ": " + error.getClass().getSimpleName() + ": " + error.getMessage();
        if (firstError.compareAndSet(null, message)) {
            System.err.println("produce: send failed: " + message);
        }
    }

    static int consume(String bootstrap, String topic, int partitions, Path outFile) throws IOException {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < partitions; p++) {
            tps.add(new TopicPartition(topic, p));
        }
        long records = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(props, new StringDeserializer(),
                new StringDeserializer());
             BufferedWriter out = Files.newBufferedWriter(outFile, StandardCharsets.UTF_8)) {
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<TopicPartition, Long> end = consumer.endOffsets(tps, Duration.ofSeconds(60));
            long lastProgress = System.currentTimeMillis();
            while (!caughtUp(consumer, tps, end)) {
                int n = 0;
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    if (r.offset() < end.get(new TopicPartition(r.topic(), r.partition()))) {
                        out.write(r.partition() + " " + r.offset() + " " + r.value());
                        out.newLine();
                        n++;
                    }
                }
                records += n;
                if (n > 0) {
                    lastProgress = System.currentTimeMillis();
                } else if (System.currentTimeMillis() - lastProgress > 60_000) {
                    System.err.printf("consume: FAILED: no progress for 60 s after %d records; end offsets %s%n",
                            records, end);
                    return 1;
                }
            }
            System.err.printf("consume: %d records up to end offsets %s%n", records, end);
        }
        return 0;
    }

    static boolean caughtUp(KafkaConsumer<?, ?> consumer, List<TopicPartition> tps, Map<TopicPartition, Long> end) {
        for (TopicPartition tp : tps) {
            if (consumer.position(tp, Duration.ofSeconds(60)) < end.get(tp)) {
                return false;
            }
        }
        return true;
    }
}
