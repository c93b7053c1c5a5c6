// A Kafka Streams word count for the exactly-once tests, with Streams'
// defaults except the ones below.
//
//   StreamsCount BOOTSTRAP APPLICATION_ID IN_TOPIC OUT_TOPIC STATE_DIR GUARANTEE
//     Counts the values of IN_TOPIC (groupBy value -> count, so a
//     repartition topic and a changelog topic are created by Streams) and
//     writes "word -> count" (both strings) to OUT_TOPIC after every update.
//     GUARANTEE is processing.guarantee (exactly_once_v2 or at_least_once).
//     commit.interval.ms is 200 so updates flow while the test watches; the
//     consumer's session timeout is 10 s so a killed instance's member
//     leaves the group soon. Runs until killed; exits 1 if Streams reaches
//     the ERROR state. Streams' state changes go to stderr.

import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Produced;

public final class StreamsCount {
    public static void main(String[] args) throws Exception {
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }
        if (args.length != 6) {
            System.err.println("usage: StreamsCount BOOTSTRAP APPLICATION_ID IN_TOPIC OUT_TOPIC STATE_DIR GUARANTEE");
            System.exit(2);
        }
        Properties p = new Properties();
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, args[1]);
        p.put(StreamsConfig.STATE_DIR_CONFIG, args[4]);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, args[5]);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, "200");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), "10000");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), "1000");
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(args[2], Consumed.with(Serdes.String(), Serdes.String()))
                .groupBy((key, word) -> word, Grouped.with(Serdes.String(), Serdes.String()))
                .count()
                .toStream()
                .mapValues(count -> Long.toString(count))
                .to(args[3], Produced.with(Serdes.String(), Serdes.String()));
        KafkaStreams streams = new KafkaStreams(builder.build(), p);
        CountDownLatch failed = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            System.err.printf("streams: %s -> %s%n", before, now);
            if (now == KafkaStreams.State.ERROR) {
                failed.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(error -> {
            System.err.printf("streams: thread failed, replacing it: %s%n", error);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.REPLACE_THREAD;
        });
        streams.start();
        failed.await();
        System.err.println("streams: ERROR state");
        System.exit(1);
    }
}
