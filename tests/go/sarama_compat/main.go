// Compatibility scenarios driven by sarama (IBM/sarama), the oldest and most
// deployed Go Kafka client.
//
// Usage: sarama_compat BOOTSTRAP PREFIX
//
// Every scenario runs under its own timeout and records "pass" or
// "fail: reason". Progress goes to stderr; the last line on stdout is one JSON
// object: {"client", "version", "results": {scenario: "pass" | "fail: reason"}}.
// Clients use sarama's defaults except for the protocol version, which is the
// newest sarama knows (sarama.MaxVersion, Kafka 4.3.1 in v1.61.1): sarama's
// default (2.8) would not exercise the newer request versions.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"strata/compat/report"

	"github.com/IBM/sarama"
)

var (
	bootstrap []string
	prefix    string
	card      = report.New("sarama_compat")
	admin     sarama.ClusterAdmin
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: sarama_compat BOOTSTRAP PREFIX")
		os.Exit(2)
	}
	bootstrap = strings.Split(os.Args[1], ",")
	prefix = os.Args[2]
	start := time.Now()
	fmt.Fprintf(os.Stderr, "sarama_compat: sarama %s, protocol version %s\n", report.ModuleVersion("github.com/IBM/sarama"), sarama.MaxVersion)

	var err error
	admin, err = sarama.NewClusterAdmin(bootstrap, config())
	if err != nil {
		fmt.Fprintln(os.Stderr, "sarama_compat: cannot connect:", err)
		os.Exit(2)
	}
	defer admin.Close()

	card.Run("admin: create, list and delete topics", 20*time.Second, scenarioAdminTopics)
	card.Run("admin: describe topic configs", 15*time.Second, scenarioDescribeConfigs)
	for _, c := range codecs {
		card.Run("produce and consume: "+c.name+", keys, headers, null values", 15*time.Second, func(ctx context.Context) error {
			return scenarioCodec(ctx, c)
		})
	}
	card.Run("large message near the 1 MB limit", 15*time.Second, scenarioLarge)
	card.Run("idempotent producer: 1000 records in order", 20*time.Second, scenarioIdempotent)
	card.Run("consume from earliest, latest and a timestamp", 20*time.Second, scenarioPositions)
	card.Run("consumer group: rebalance on join and leave", 30*time.Second, scenarioGroup)
	card.Run("offset commit and fetch", 15*time.Second, scenarioOffsets)
	card.Run("admin: list and describe groups", 10*time.Second, scenarioListDescribeGroups)
	card.Run("admin: delete records moves the earliest offset", 15*time.Second, scenarioDeleteRecords)
	card.Run("transactions: commit and abort, read_committed skips the aborted records", 30*time.Second, scenarioTransactions)

	fmt.Fprintf(os.Stderr, "sarama_compat: done in %.1fs\n", time.Since(start).Seconds())
	card.Print("sarama", "sarama "+report.ModuleVersion("github.com/IBM/sarama"))
}

// config is sarama's default configuration at the newest protocol version.
func config() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.MaxVersion
	cfg.ClientID = prefix
	return cfg
}

func str(s string) *string { return &s }

func createTopic(topic string, partitions int32, configs map[string]*string) error {
	err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1, ConfigEntries: configs}, false)
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return waitTopic(topic, partitions)
}

// waitTopic waits until the broker's metadata has the topic with a leader
// for every partition. Kafka acknowledges CreateTopics once the controller
// has committed the topic; brokers learn of it asynchronously, and until
// then answer e.g. DescribeConfigs with UNKNOWN_TOPIC_OR_PARTITION.
func waitTopic(topic string, partitions int32) error {
	deadline := time.Now().Add(10 * time.Second)
	last := "no answer"
	for time.Now().Before(deadline) {
		described, err := admin.DescribeTopics([]string{topic})
		if err == nil && len(described) == 1 {
			t := described[0]
			ready := t.Err == sarama.ErrNoError && len(t.Partitions) == int(partitions)
			for _, p := range t.Partitions {
				ready = ready && p.Err == sarama.ErrNoError && p.Leader >= 0
			}
			if ready {
				return nil
			}
			last = fmt.Sprintf("%v, %d partitions", t.Err, len(t.Partitions))
		} else if err != nil {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("created topic %s never appeared in the metadata (%s)", topic, last)
}

// message builds a producer message for one partition.
func message(topic string, partition int32, key, value []byte, headers ...sarama.RecordHeader) *sarama.ProducerMessage {
	m := &sarama.ProducerMessage{Topic: topic, Partition: partition, Headers: headers}
	if key != nil {
		m.Key = sarama.ByteEncoder(key)
	}
	if value != nil {
		m.Value = sarama.ByteEncoder(value)
	}
	return m
}

func producerConfig(tune func(*sarama.Config)) *sarama.Config {
	cfg := config()
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	if tune != nil {
		tune(cfg)
	}
	return cfg
}

// produceSync sends messages one at a time with a SyncProducer.
func produceSync(msgs []*sarama.ProducerMessage, tune func(*sarama.Config)) error {
	p, err := sarama.NewSyncProducer(bootstrap, producerConfig(tune))
	if err != nil {
		return err
	}
	defer p.Close()
	for i, m := range msgs {
		if _, _, err := p.SendMessage(m); err != nil {
			return fmt.Errorf("sync producer, message %d: %w", i, err)
		}
	}
	return nil
}

// produceAsync sends messages through an AsyncProducer (acks=all) and waits
// for every success or error; it returns the offsets in input order.
func produceAsync(ctx context.Context, msgs []*sarama.ProducerMessage, tune func(*sarama.Config)) ([]int64, error) {
	p, err := sarama.NewAsyncProducer(bootstrap, producerConfig(tune))
	if err != nil {
		return nil, err
	}
	defer p.Close()
	index := map[*sarama.ProducerMessage]int{}
	for i, m := range msgs {
		index[m] = i
	}
	go func() {
		for _, m := range msgs {
			p.Input() <- m
		}
	}()
	offsets := make([]int64, len(msgs))
	for acked := range msgs {
		report.Stage("produce: %d of %d acknowledged", acked, len(msgs))
		select {
		case m := <-p.Successes():
			offsets[index[m]] = m.Offset
		case e := <-p.Errors():
			return nil, fmt.Errorf("async producer: %w", e.Err)
		case <-ctx.Done():
			return nil, fmt.Errorf("async producer: %w", ctx.Err())
		}
	}
	return offsets, nil
}

// consume reads n messages of one partition from offset with a partition
// consumer.
func consume(ctx context.Context, topic string, partition int32, offset int64, n int, tune ...func(*sarama.Config)) ([]*sarama.ConsumerMessage, error) {
	cfg := config()
	for _, t := range tune {
		t(cfg)
	}
	c, err := sarama.NewConsumer(bootstrap, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	pc, err := c.ConsumePartition(topic, partition, offset)
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	var out []*sarama.ConsumerMessage
	for len(out) < n {
		select {
		case m := <-pc.Messages():
			out = append(out, m)
		case e := <-pc.Errors():
			return out, e.Err
		case <-ctx.Done():
			return out, fmt.Errorf("consumed %d of %d: %w", len(out), n, ctx.Err())
		}
	}
	return out, nil
}

func scenarioAdminTopics(ctx context.Context) error {
	name := prefix + "-admin"
	if err := createTopic(name, 2, map[string]*string{"retention.ms": str("-1")}); err != nil {
		return err
	}
	topics, err := admin.ListTopics()
	if err != nil {
		return err
	}
	detail, ok := topics[name]
	if err := report.Checkf(ok && detail.NumPartitions == 2, "created topic listed %v with %d partitions", ok, detail.NumPartitions); err != nil {
		return err
	}
	described, err := admin.DescribeTopics([]string{name})
	if err != nil {
		return err
	}
	if err := report.Checkf(len(described) == 1 && described[0].Err == sarama.ErrNoError && len(described[0].Partitions) == 2,
		"described %d topics", len(described)); err != nil {
		return err
	}
	if err := admin.DeleteTopic(name); err != nil {
		return fmt.Errorf("delete topic: %w", err)
	}
	for {
		topics, err := admin.ListTopics()
		if err != nil {
			return err
		}
		if _, ok := topics[name]; !ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("deleted topic is still listed")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func scenarioDescribeConfigs(context.Context) error {
	topic := prefix + "-configs"
	if err := createTopic(topic, 1, map[string]*string{"retention.ms": str("3600000")}); err != nil {
		return err
	}
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
	if err != nil {
		return err
	}
	byName := map[string]sarama.ConfigEntry{}
	for _, e := range entries {
		byName[e.Name] = e
	}
	mmb, ok1 := byName["max.message.bytes"]
	retention, ok2 := byName["retention.ms"]
	if err := report.Checkf(ok1 && ok2, "max.message.bytes/retention.ms missing among %d configs", len(entries)); err != nil {
		return err
	}
	if err := report.Checkf(mmb.Default && mmb.Source == sarama.SourceDefault && mmb.Value != "",
		"max.message.bytes %q default %v source %v", mmb.Value, mmb.Default, mmb.Source); err != nil {
		return err
	}
	return report.Checkf(retention.Value == "3600000" && !retention.Default && retention.Source == sarama.SourceTopic,
		"retention.ms %q default %v source %v, want the topic's override", retention.Value, retention.Default, retention.Source)
}

type codec struct {
	name  string
	codec sarama.CompressionCodec
}

var codecs = []codec{
	{"none", sarama.CompressionNone},
	{"gzip", sarama.CompressionGZIP},
	{"snappy", sarama.CompressionSnappy},
	{"lz4", sarama.CompressionLZ4},
	{"zstd", sarama.CompressionZSTD},
}

// storedCodecs fetches a partition with a raw Fetch request and returns the
// compression codec of every record batch the broker stored.
func storedCodecs(topic string, partition int32) ([]sarama.CompressionCodec, error) {
	client, err := sarama.NewClient(bootstrap, config())
	if err != nil {
		return nil, err
	}
	defer client.Close()
	leader, err := client.Leader(topic, partition)
	if err != nil {
		return nil, err
	}
	req := &sarama.FetchRequest{Version: 12, MaxWaitTime: 100, MinBytes: 1, MaxBytes: 1 << 20, SessionEpoch: -1}
	req.AddBlock(topic, partition, 0, 1<<20, -1)
	resp, err := leader.Fetch(req)
	if err != nil {
		return nil, err
	}
	block := resp.GetBlock(topic, partition)
	if block == nil || block.Err != sarama.ErrNoError {
		return nil, fmt.Errorf("raw fetch: %v", block)
	}
	var out []sarama.CompressionCodec
	for _, records := range block.RecordsSet {
		if records.RecordBatch != nil {
			out = append(out, records.RecordBatch.Codec)
		}
	}
	return out, nil
}

func scenarioCodec(ctx context.Context, c codec) error {
	topic := prefix + "-codec-" + c.name
	if err := createTopic(topic, 1, nil); err != nil {
		return err
	}
	const n = 50
	value := func(i int) []byte {
		if i%10 == 3 {
			return nil
		}
		return []byte(strings.Repeat(fmt.Sprintf("%s-%d ", c.name, i), 8))
	}
	msgs := make([]*sarama.ProducerMessage, n)
	for i := range msgs {
		msgs[i] = message(topic, 0, []byte(fmt.Sprintf("k%d", i)), value(i),
			sarama.RecordHeader{Key: []byte("h"), Value: []byte(fmt.Sprint(i))})
	}
	tune := func(cfg *sarama.Config) { cfg.Producer.Compression = c.codec }
	// The first half through the sync producer, the second half through
	// the async producer (acks=all, batched).
	if err := produceSync(msgs[:n/2], tune); err != nil {
		return err
	}
	offsets, err := produceAsync(ctx, msgs[n/2:], func(cfg *sarama.Config) {
		tune(cfg)
		cfg.Producer.Flush.Messages = 10
		cfg.Producer.Flush.Frequency = 20 * time.Millisecond
	})
	if err != nil {
		return err
	}
	for i, o := range offsets {
		if o != int64(n/2+i) {
			return fmt.Errorf("async message %d acknowledged at offset %d", n/2+i, o)
		}
	}
	got, err := consume(ctx, topic, 0, sarama.OffsetOldest, n)
	if err != nil {
		return err
	}
	for i, m := range got {
		if m.Offset != int64(i) || string(m.Key) != fmt.Sprintf("k%d", i) {
			return fmt.Errorf("message %d: offset %d key %q", i, m.Offset, m.Key)
		}
		want := value(i)
		if (want == nil) != (m.Value == nil) || !bytes.Equal(want, m.Value) {
			return fmt.Errorf("message %d: value %q (nil %v), want %q (nil %v)", i, m.Value, m.Value == nil, want, want == nil)
		}
		if len(m.Headers) != 1 || string(m.Headers[0].Key) != "h" || string(m.Headers[0].Value) != fmt.Sprint(i) {
			return fmt.Errorf("message %d: %d headers", i, len(m.Headers))
		}
	}
	stored, err := storedCodecs(topic, 0)
	if err != nil {
		return err
	}
	if len(stored) == 0 {
		return errors.New("raw fetch returned no record batches")
	}
	for _, s := range stored {
		if s != c.codec {
			return fmt.Errorf("stored batch codec %v, want %v", s, c.codec)
		}
	}
	return nil
}

func scenarioLarge(ctx context.Context) error {
	topic := prefix + "-large"
	if err := createTopic(topic, 1, nil); err != nil {
		return err
	}
	pattern := make([]byte, 256)
	for i := range pattern {
		pattern[i] = byte(i)
	}
	big := bytes.Repeat(pattern, 3900)
	if err := produceSync([]*sarama.ProducerMessage{message(topic, 0, nil, big)}, nil); err != nil {
		return err
	}
	got, err := consume(ctx, topic, 0, sarama.OffsetOldest, 1)
	if err != nil {
		return err
	}
	return report.Checkf(bytes.Equal(got[0].Value, big), "large value did not round-trip")
}

// Sarama is not idempotent by default: this scenario opts in the documented
// way (acks=all, one request in flight) and checks order and exactly-once
// offsets through the async producer.
func scenarioIdempotent(ctx context.Context) error {
	topic := prefix + "-idempotent"
	if err := createTopic(topic, 1, nil); err != nil {
		return err
	}
	const n = 1000
	msgs := make([]*sarama.ProducerMessage, n)
	for i := range msgs {
		msgs[i] = message(topic, 0, []byte("same-key"), []byte(fmt.Sprintf("seq-%04d", i)))
	}
	report.Stage("idempotent: producer starting (InitProducerId)")
	offsets, err := produceAsync(ctx, msgs, func(cfg *sarama.Config) {
		cfg.Producer.Idempotent = true
		cfg.Net.MaxOpenRequests = 1
		cfg.Producer.Flush.Messages = 50
	})
	if err != nil {
		return err
	}
	for i, o := range offsets {
		if o != int64(i) {
			return fmt.Errorf("message %d acknowledged at offset %d", i, o)
		}
	}
	report.Stage("idempotent: all acknowledged; consuming")
	got, err := consume(ctx, topic, 0, sarama.OffsetOldest, n)
	if err != nil {
		return err
	}
	report.Stage("idempotent: consumed; reading the end offset")
	for i, m := range got {
		if m.Offset != int64(i) || string(m.Value) != fmt.Sprintf("seq-%04d", i) {
			return fmt.Errorf("position %d: offset %d value %q", i, m.Offset, m.Value)
		}
	}
	// Nothing beyond the 1000 (no duplicates).
	client, err := sarama.NewClient(bootstrap, config())
	if err != nil {
		return err
	}
	defer client.Close()
	end, err := client.GetOffset(topic, 0, sarama.OffsetNewest)
	if err != nil {
		return err
	}
	return report.Checkf(end == n, "end offset %d, want %d", end, n)
}

func scenarioPositions(ctx context.Context) error {
	topic := prefix + "-positions"
	if err := createTopic(topic, 1, nil); err != nil {
		return err
	}
	base := time.Now().Add(-100 * time.Second).Truncate(time.Millisecond)
	msgs := make([]*sarama.ProducerMessage, 20)
	for i := range msgs {
		msgs[i] = message(topic, 0, nil, []byte(fmt.Sprintf("v%d", i)))
		msgs[i].Timestamp = base.Add(time.Duration(i) * time.Second)
	}
	if err := produceSync(msgs, nil); err != nil {
		return err
	}
	client, err := sarama.NewClient(bootstrap, config())
	if err != nil {
		return err
	}
	defer client.Close()
	oldest, err1 := client.GetOffset(topic, 0, sarama.OffsetOldest)
	newest, err2 := client.GetOffset(topic, 0, sarama.OffsetNewest)
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	if err := report.Checkf(oldest == 0 && newest == 20, "watermarks %d..%d, want 0..20", oldest, newest); err != nil {
		return err
	}
	atTime, err := client.GetOffset(topic, 0, base.Add(7500*time.Millisecond).UnixMilli())
	if err != nil {
		return err
	}
	if err := report.Checkf(atTime == 8, "offset for time %d, want 8", atTime); err != nil {
		return err
	}

	got, err := consume(ctx, topic, 0, sarama.OffsetOldest, 1)
	if err != nil {
		return fmt.Errorf("earliest: %w", err)
	}
	if err := report.Checkf(got[0].Offset == 0 && string(got[0].Value) == "v0", "earliest: %d %q", got[0].Offset, got[0].Value); err != nil {
		return err
	}
	if err := report.Checkf(got[0].Timestamp.Equal(base), "timestamp %v, want %v", got[0].Timestamp, base); err != nil {
		return err
	}
	got, err = consume(ctx, topic, 0, atTime, 2)
	if err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	if err := report.Checkf(string(got[0].Value) == "v8" && string(got[1].Value) == "v9", "from the timestamp's offset: %q %q", got[0].Value, got[1].Value); err != nil {
		return err
	}

	// Latest: a consumer started at the end sees only what comes next.
	c, err := sarama.NewConsumer(bootstrap, config())
	if err != nil {
		return err
	}
	defer c.Close()
	pc, err := c.ConsumePartition(topic, 0, sarama.OffsetNewest)
	if err != nil {
		return err
	}
	defer pc.Close()
	if err := produceSync([]*sarama.ProducerMessage{message(topic, 0, nil, []byte("v20"))}, nil); err != nil {
		return err
	}
	select {
	case m := <-pc.Messages():
		return report.Checkf(m.Offset == 20 && string(m.Value) == "v20", "latest: first message %d %q", m.Offset, m.Value)
	case e := <-pc.Errors():
		return e.Err
	case <-ctx.Done():
		return fmt.Errorf("latest: %w", ctx.Err())
	}
}

// member is one consumer of a group with its current claims and the
// messages it consumed.
type member struct {
	group  sarama.ConsumerGroup
	mu     sync.Mutex
	claims []int32
	seen   map[string]bool
	done   chan struct{}
	cancel context.CancelFunc
}

func (m *member) Setup(s sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.claims = slices.Sorted(slices.Values(s.Claims()[prefix+"-group"]))
	return nil
}

func (m *member) Cleanup(sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.claims = nil
	return nil
}

func (m *member) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		m.mu.Lock()
		m.seen[string(msg.Value)] = true
		m.mu.Unlock()
		s.MarkMessage(msg, "")
	}
	return nil
}

func (m *member) partitions() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.claims)
}

func joinGroup(topic, group string) (*member, error) {
	cfg := config()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	// Short heartbeats so that rebalances are noticed quickly.
	cfg.Consumer.Group.Heartbeat.Interval = 500 * time.Millisecond
	g, err := sarama.NewConsumerGroup(bootstrap, group, cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{group: g, seen: map[string]bool{}, done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, m); errors.Is(err, sarama.ErrClosedConsumerGroup) {
				return
			}
		}
	}()
	return m, nil
}

func (m *member) leave() {
	m.cancel()
	<-m.done
	m.group.Close()
}

func waitFor(ctx context.Context, what string, cond func() bool, state func() string) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: never happened (%s)", what, state())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func scenarioGroup(ctx context.Context) error {
	topic := prefix + "-group"
	group := prefix + "-g"
	if err := createTopic(topic, 4, nil); err != nil {
		return err
	}
	var msgs []*sarama.ProducerMessage
	for i := 0; i < 40; i++ {
		msgs = append(msgs, message(topic, int32(i%4), nil, []byte(fmt.Sprintf("r%d", i))))
	}
	if err := produceSync(msgs, nil); err != nil {
		return err
	}
	a, err := joinGroup(topic, group)
	if err != nil {
		return err
	}
	aLeft := false
	defer func() {
		if !aLeft {
			a.leave()
		}
	}()
	var b *member
	state := func() string {
		s := fmt.Sprintf("a owns %v", a.partitions())
		if b != nil {
			s += fmt.Sprintf(", b owns %v", b.partitions())
		}
		return s
	}
	if err := waitFor(ctx, "one member owns all four partitions", func() bool { return len(a.partitions()) == 4 }, state); err != nil {
		return err
	}
	b, err = joinGroup(topic, group)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, "two members share the four partitions", func() bool {
		pa, pb := a.partitions(), b.partitions()
		return len(pa) == 2 && len(pb) == 2 && len(slices.Compact(slices.Sorted(slices.Values(append(pa, pb...))))) == 4
	}, state); err != nil {
		return err
	}
	described, err := admin.DescribeConsumerGroups([]string{group})
	if err != nil {
		return err
	}
	if err := report.Checkf(len(described) == 1 && described[0].Err == sarama.ErrNoError && described[0].State == "Stable" &&
		len(described[0].Members) == 2 && described[0].Protocol == "range",
		"described: %+v", described[0]); err != nil {
		return err
	}
	b.leave()
	if err := waitFor(ctx, "the survivor owns all four partitions again", func() bool { return len(a.partitions()) == 4 }, state); err != nil {
		return err
	}
	if err := waitFor(ctx, "all 40 messages consumed by the group", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, m := range msgs {
			v := string(m.Value.(sarama.ByteEncoder))
			if !a.seen[v] && !b.seen[v] {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("a saw %d, b saw %d", len(a.seen), len(b.seen)) }); err != nil {
		return err
	}
	// Leaving commits the marked offsets: ten messages per partition.
	a.leave()
	aLeft = true
	offsets, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0, 1, 2, 3}})
	if err != nil {
		return err
	}
	for p := int32(0); p < 4; p++ {
		block := offsets.GetBlock(topic, p)
		if block == nil || block.Err != sarama.ErrNoError || block.Offset != 10 {
			return fmt.Errorf("committed offset of partition %d: %+v, want 10", p, block)
		}
	}
	return nil
}

func scenarioOffsets(context.Context) error {
	topic := prefix + "-commits"
	group := prefix + "-commits"
	if err := createTopic(topic, 3, nil); err != nil {
		return err
	}
	var msgs []*sarama.ProducerMessage
	for i := 0; i < 5; i++ {
		msgs = append(msgs, message(topic, 1, nil, []byte(fmt.Sprintf("c%d", i))))
	}
	if err := produceSync(msgs, nil); err != nil {
		return err
	}
	cfg := config()
	cfg.Consumer.Return.Errors = true // commit errors on pom.Errors()
	client, err := sarama.NewClient(bootstrap, cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	// closeOM stops a partition offset manager and its offset manager; the
	// latter flushes and releases it even when a commit keeps failing
	// (pom.Close would wait for a successful commit).
	closeOM := func(om sarama.OffsetManager, pom sarama.PartitionOffsetManager) {
		pom.AsyncClose()
		om.Close()
	}
	// Commit through an offset manager...
	om, err := sarama.NewOffsetManagerFromClient(group, client)
	if err != nil {
		return err
	}
	pom, err := om.ManagePartition(topic, 1)
	if err != nil {
		om.Close()
		return err
	}
	if next, _ := pom.NextOffset(); next != sarama.OffsetNewest {
		closeOM(om, pom)
		return fmt.Errorf("a new group starts at %d, want the configured initial offset (newest)", next)
	}
	pom.MarkOffset(5, "checkpoint")
	om.Commit()
	select {
	case e := <-pom.Errors():
		closeOM(om, pom)
		return fmt.Errorf("commit: %w", e.Err)
	default:
	}
	closeOM(om, pom)
	// ...read it back through a fresh one...
	om, err = sarama.NewOffsetManagerFromClient(group, client)
	if err != nil {
		return err
	}
	pom, err = om.ManagePartition(topic, 1)
	if err != nil {
		om.Close()
		return err
	}
	next, metadata := pom.NextOffset()
	closeOM(om, pom)
	if err := report.Checkf(next == 5 && metadata == "checkpoint", "fetched %d %q, want 5 \"checkpoint\"", next, metadata); err != nil {
		return err
	}
	// ...and through the admin API.
	offsets, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0, 1}})
	if err != nil {
		return err
	}
	b0, b1 := offsets.GetBlock(topic, 0), offsets.GetBlock(topic, 1)
	return report.Checkf(b0 != nil && b0.Offset == -1 && b1 != nil && b1.Offset == 5 && b1.Metadata == "checkpoint",
		"admin offsets: partition 0 %+v, partition 1 %+v", b0, b1)
}

// The group of the rebalance scenario (left by all its members) and the
// simple group of the offset scenario (commits only, no protocol type).
func scenarioListDescribeGroups(context.Context) error {
	group, simple := prefix+"-g", prefix+"-commits"
	groups, err := admin.ListConsumerGroups()
	if err != nil {
		return err
	}
	protocolType, ok := groups[group]
	if err := report.Checkf(ok && protocolType == "consumer", "%s listed %v with protocol type %q", group, ok, protocolType); err != nil {
		return err
	}
	protocolType, ok = groups[simple]
	if err := report.Checkf(ok && protocolType == "", "%s listed %v with protocol type %q", simple, ok, protocolType); err != nil {
		return err
	}
	described, err := admin.DescribeConsumerGroups([]string{group, simple})
	if err != nil {
		return err
	}
	if err := report.Checkf(len(described) == 2, "described %d groups", len(described)); err != nil {
		return err
	}
	for _, d := range described {
		want := map[string]string{group: "consumer", simple: ""}[d.GroupId]
		if d.Err != sarama.ErrNoError || d.State != "Empty" || d.ProtocolType != want || len(d.Members) != 0 {
			return fmt.Errorf("described %s: error %v state %q protocol type %q, %d members", d.GroupId, d.Err, d.State, d.ProtocolType, len(d.Members))
		}
	}
	return nil
}

func scenarioDeleteRecords(ctx context.Context) error {
	topic := prefix + "-delete-records"
	if err := createTopic(topic, 1, nil); err != nil {
		return err
	}
	var msgs []*sarama.ProducerMessage
	for i := 0; i < 10; i++ {
		msgs = append(msgs, message(topic, 0, nil, []byte(fmt.Sprintf("d%d", i))))
	}
	if err := produceSync(msgs, nil); err != nil {
		return err
	}
	if err := admin.DeleteRecords(topic, map[int32]int64{0: 4}); err != nil {
		return fmt.Errorf("delete records: %w", err)
	}
	client, err := sarama.NewClient(bootstrap, config())
	if err != nil {
		return err
	}
	defer client.Close()
	oldest, err := client.GetOffset(topic, 0, sarama.OffsetOldest)
	if err != nil {
		return err
	}
	if err := report.Checkf(oldest == 4, "earliest offset %d, want 4", oldest); err != nil {
		return err
	}
	got, err := consume(ctx, topic, 0, sarama.OffsetOldest, 6)
	if err != nil {
		return err
	}
	return report.Checkf(got[0].Offset == 4 && string(got[0].Value) == "d4", "reading from the oldest: first %d %q", got[0].Offset, got[0].Value)
}

// scenarioTransactions: commit, abort, commit from sarama's transactional
// producer; read_committed consumers see the committed records only.
func scenarioTransactions(ctx context.Context) error {
	topic := prefix + "-txn"
	if err := createTopic(topic, 1, nil); err != nil {
		return err
	}
	p, err := sarama.NewSyncProducer(bootstrap, producerConfig(func(cfg *sarama.Config) {
		cfg.Producer.Idempotent = true
		cfg.Producer.Transaction.ID = prefix + "-txn"
		cfg.Net.MaxOpenRequests = 1
	}))
	if err != nil {
		return err
	}
	defer p.Close()
	steps := []struct {
		values []string
		commit bool
	}{{[]string{"a1", "a2"}, true}, {[]string{"b1"}, false}, {[]string{"c1"}, true}}
	for _, step := range steps {
		if err := p.BeginTxn(); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		for _, v := range step.values {
			if _, _, err := p.SendMessage(message(topic, 0, nil, []byte(v))); err != nil {
				return fmt.Errorf("send: %w", err)
			}
		}
		if step.commit {
			err = p.CommitTxn()
		} else {
			err = p.AbortTxn()
		}
		if err != nil {
			return fmt.Errorf("end transaction (commit %v): %w", step.commit, err)
		}
	}
	values := func(ms []*sarama.ConsumerMessage) string {
		var out []string
		for _, m := range ms {
			out = append(out, string(m.Value))
		}
		return strings.Join(out, " ")
	}
	committed, err := consume(ctx, topic, 0, sarama.OffsetOldest, 3, func(cfg *sarama.Config) {
		cfg.Consumer.IsolationLevel = sarama.ReadCommitted
	})
	if err != nil {
		return err
	}
	if got := values(committed); got != "a1 a2 c1" {
		return fmt.Errorf("read_committed reads a1 a2 c1, got %q", got)
	}
	all, err := consume(ctx, topic, 0, sarama.OffsetOldest, 4)
	if err != nil {
		return err
	}
	if got := values(all); got != "a1 a2 b1 c1" {
		return fmt.Errorf("read_uncommitted reads all four, got %q", got)
	}
	return nil
}
