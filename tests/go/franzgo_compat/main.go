// Compatibility scenarios driven by franz-go (kgo and kadm), the most
// complete pure-Go Kafka client.
//
// Usage: franzgo_compat BOOTSTRAP PREFIX
//
// Every scenario runs under its own timeout and records "pass" or
// "fail: reason". Progress goes to stderr; the last line on stdout is one JSON
// object: {"client", "version", "results": {scenario: "pass" | "fail: reason"}}.
// Clients keep franz-go's defaults (idempotent producer, cooperative-sticky
// group balancer) unless a scenario says otherwise.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"strata/compat/report"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var (
	bootstrap []string
	prefix    string
	card      = report.New("franzgo_compat")
	admClient *kgo.Client
	adm       *kadm.Client
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: franzgo_compat BOOTSTRAP PREFIX")
		os.Exit(2)
	}
	bootstrap = strings.Split(os.Args[1], ",")
	prefix = os.Args[2]
	start := time.Now()

	var err error
	admClient, err = kgo.NewClient(kgo.SeedBrokers(bootstrap...))
	if err != nil {
		fmt.Fprintln(os.Stderr, "franzgo_compat:", err)
		os.Exit(2)
	}
	adm = kadm.NewClient(admClient)
	defer adm.Close()
	pingCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	err = admClient.Ping(pingCtx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "franzgo_compat: cannot reach the broker:", err)
		os.Exit(2)
	}

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
	card.Run("consumer group: rebalance on join and leave", 30*time.Second, func(ctx context.Context) error {
		return scenarioGroupRebalance(ctx, false)
	})
	card.Run("consumer group (group.protocol=consumer, KIP-848): rebalance on join and leave", 40*time.Second, func(ctx context.Context) error {
		return scenarioGroupRebalance(ctx, true)
	})
	card.Run("offset commit and fetch", 20*time.Second, scenarioOffsets)
	card.Run("admin: list and describe groups", 10*time.Second, scenarioListDescribeGroups)
	card.Run("admin: delete records moves the earliest offset", 15*time.Second, scenarioDeleteRecords)
	card.Run("transactions: commit and abort, read_committed skips the aborted records", 30*time.Second, scenarioTransactions)

	fmt.Fprintf(os.Stderr, "franzgo_compat: done in %.1fs\n", time.Since(start).Seconds())
	card.Print("franz-go", "franz-go "+report.ModuleVersion("github.com/twmb/franz-go"))
}

func createTopic(ctx context.Context, topic string, partitions int32, configs map[string]*string) error {
	resp, err := adm.CreateTopic(ctx, partitions, 1, configs, topic)
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	if resp.Err != nil {
		return fmt.Errorf("create topic %s: %w", topic, resp.Err)
	}
	return waitTopic(ctx, topic, partitions)
}

// waitTopic waits until the broker's metadata has the topic with a leader
// for every partition. Kafka acknowledges CreateTopics once the controller
// has committed the topic; brokers learn of it asynchronously, and until
// then answer e.g. DescribeConfigs with UNKNOWN_TOPIC_OR_PARTITION. The
// request goes straight to the seed broker: kgo's client-side metadata
// cache would not show a change for up to MetadataMinAge.
func waitTopic(ctx context.Context, topic string, partitions int32) error {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	last := "no answer"
	for {
		resp, err := req.RequestWith(ctx, admClient.SeedBrokers()[0])
		if err == nil && len(resp.Topics) == 1 {
			t := resp.Topics[0]
			ready := t.ErrorCode == 0 && len(t.Partitions) == int(partitions)
			for _, p := range t.Partitions {
				ready = ready && p.ErrorCode == 0 && p.Leader >= 0
			}
			if ready {
				return nil
			}
			last = fmt.Sprintf("error code %d, %d partitions", t.ErrorCode, len(t.Partitions))
		} else if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("created topic %s never appeared in the metadata (%s)", topic, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func newClient(opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(bootstrap...)}, opts...)...)
}

// produce writes records synchronously with a default (idempotent) producer.
func produce(ctx context.Context, records []*kgo.Record, opts ...kgo.Opt) ([]*kgo.Record, error) {
	cl, err := newClient(append([]kgo.Opt{kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	rs := cl.ProduceSync(ctx, records...)
	if err := rs.FirstErr(); err != nil {
		return nil, fmt.Errorf("produce: %w", err)
	}
	out := make([]*kgo.Record, len(rs))
	for i, r := range rs {
		out[i] = r.Record
	}
	return out, nil
}

// consume reads n records of one partition from offset, without a group.
func consume(ctx context.Context, topic string, partition int32, from kgo.Offset, n int, opts ...kgo.Opt) ([]*kgo.Record, error) {
	cl, err := newClient(append([]kgo.Opt{kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: from}})}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var out []*kgo.Record
	for len(out) < n {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return out, fmt.Errorf("consumed %d of %d records: %w", len(out), n, ctx.Err())
		}
		if errs := fetches.Errors(); len(errs) > 0 {
			return out, fmt.Errorf("fetch: %v", errs[0].Err)
		}
		out = append(out, fetches.Records()...)
	}
	return out, nil
}

func str(s string) *string { return &s }

func scenarioAdminTopics(ctx context.Context) error {
	name := prefix + "-admin"
	if err := createTopic(ctx, name, 2, map[string]*string{"retention.ms": str("-1")}); err != nil {
		return err
	}
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		return err
	}
	detail, ok := topics[name]
	if err := report.Checkf(ok, "created topic %s is not listed", name); err != nil {
		return err
	}
	if err := report.Checkf(len(detail.Partitions) == 2, "listed %d partitions, want 2", len(detail.Partitions)); err != nil {
		return err
	}
	resp, err := adm.DeleteTopic(ctx, name)
	if err != nil {
		return err
	}
	if resp.Err != nil {
		return fmt.Errorf("delete topic: %w", resp.Err)
	}
	// A fresh client: kgo serves metadata from its cache for up to
	// MetadataMinAge (5 s), so adm could still list the topic.
	fresh, err := newClient()
	if err != nil {
		return err
	}
	freshAdm := kadm.NewClient(fresh)
	defer freshAdm.Close()
	// The broker's metadata converges shortly after the deletion is
	// acknowledged.
	for {
		topics, err := freshAdm.ListTopics(ctx)
		if err != nil {
			return err
		}
		if !topics.Has(name) {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("deleted topic is still listed")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func scenarioDescribeConfigs(ctx context.Context) error {
	topic := prefix + "-configs"
	if err := createTopic(ctx, topic, 1, map[string]*string{"retention.ms": str("3600000")}); err != nil {
		return err
	}
	configs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return err
	}
	rc, err := configs.On(topic, nil)
	if err != nil {
		return err
	}
	if rc.Err != nil {
		return fmt.Errorf("describe configs: %w", rc.Err)
	}
	byKey := map[string]kadm.Config{}
	for _, c := range rc.Configs {
		byKey[c.Key] = c
	}
	mmb, ok1 := byKey["max.message.bytes"]
	retention, ok2 := byKey["retention.ms"]
	if err := report.Checkf(ok1 && ok2, "max.message.bytes/retention.ms missing among %d configs", len(rc.Configs)); err != nil {
		return err
	}
	if err := report.Checkf(retention.MaybeValue() == "3600000" && retention.Source == kmsg.ConfigSourceDynamicTopicConfig,
		"retention.ms %q from %v, want the topic's override 3600000", retention.MaybeValue(), retention.Source); err != nil {
		return err
	}
	if err := report.Checkf(mmb.Source == kmsg.ConfigSourceDefaultConfig, "max.message.bytes source %v, want DEFAULT_CONFIG", mmb.Source); err != nil {
		return err
	}
	return report.Checkf(mmb.MaybeValue() != "", "max.message.bytes has no value")
}

type codec struct {
	name  string
	codec kgo.CompressionCodec
	attr  uint8 // the compression bits of a record batch's attributes
}

var codecs = []codec{
	{"none", kgo.NoCompression(), 0},
	{"gzip", kgo.GzipCompression(), 1},
	{"snappy", kgo.SnappyCompression(), 2},
	{"lz4", kgo.Lz4Compression(), 3},
	{"zstd", kgo.ZstdCompression(), 4},
}

func scenarioCodec(ctx context.Context, c codec) error {
	topic := prefix + "-codec-" + c.name
	if err := createTopic(ctx, topic, 1, nil); err != nil {
		return err
	}
	const n = 50
	value := func(i int) []byte {
		if i%10 == 3 {
			return nil
		}
		// Repetitive, so that every codec really compresses.
		return []byte(strings.Repeat(fmt.Sprintf("%s-%d ", c.name, i), 8))
	}
	records := make([]*kgo.Record, n)
	for i := range records {
		records[i] = &kgo.Record{
			Topic: topic, Partition: 0,
			Key:     []byte(fmt.Sprintf("k%d", i)),
			Value:   value(i),
			Headers: []kgo.RecordHeader{{Key: "h", Value: []byte(fmt.Sprint(i))}, {Key: "empty", Value: nil}},
		}
	}
	if _, err := produce(ctx, records, kgo.ProducerBatchCompression(c.codec), kgo.ProducerLinger(50*time.Millisecond)); err != nil {
		return err
	}
	got, err := consume(ctx, topic, 0, kgo.NewOffset().AtStart(), n)
	if err != nil {
		return err
	}
	if err := report.Checkf(len(got) == n, "consumed %d of %d", len(got), n); err != nil {
		return err
	}
	for i, r := range got {
		if r.Offset != int64(i) || string(r.Key) != fmt.Sprintf("k%d", i) {
			return fmt.Errorf("record %d: offset %d key %q", i, r.Offset, r.Key)
		}
		want := value(i)
		if (want == nil) != (r.Value == nil) || !bytes.Equal(want, r.Value) {
			return fmt.Errorf("record %d: value %q (nil %v), want %q (nil %v)", i, r.Value, r.Value == nil, want, want == nil)
		}
		if len(r.Headers) != 2 || r.Headers[0].Key != "h" || string(r.Headers[0].Value) != fmt.Sprint(i) ||
			r.Headers[1].Key != "empty" || len(r.Headers[1].Value) != 0 {
			return fmt.Errorf("record %d: headers %v", i, r.Headers)
		}
		if ct := r.Attrs.CompressionType(); ct != c.attr {
			return fmt.Errorf("record %d: stored batch compression %d, want %d (%s)", i, ct, c.attr, c.name)
		}
	}
	return nil
}

func scenarioLarge(ctx context.Context) error {
	topic := prefix + "-large"
	if err := createTopic(ctx, topic, 1, nil); err != nil {
		return err
	}
	big := bytes.Repeat(func() []byte {
		b := make([]byte, 256)
		for i := range b {
			b[i] = byte(i)
		}
		return b
	}(), 3900)
	if _, err := produce(ctx, []*kgo.Record{{Topic: topic, Partition: 0, Value: big}}); err != nil {
		return err
	}
	got, err := consume(ctx, topic, 0, kgo.NewOffset().AtStart(), 1)
	if err != nil {
		return err
	}
	return report.Checkf(len(got) == 1 && bytes.Equal(got[0].Value, big), "large value did not round-trip")
}

func scenarioIdempotent(ctx context.Context) error {
	topic := prefix + "-idempotent"
	if err := createTopic(ctx, topic, 1, nil); err != nil {
		return err
	}
	const n = 1000
	// Asynchronous produce, as applications do, with small batches so that
	// several requests are in flight at once.
	cl, err := newClient(kgo.DefaultProduceTopic(topic), kgo.ProducerBatchMaxBytes(4096))
	if err != nil {
		return err
	}
	defer cl.Close()
	var mu sync.Mutex
	var produceErr error
	offsets := make([]int64, n)
	for i := 0; i < n; i++ {
		i := i
		cl.Produce(ctx, &kgo.Record{Key: []byte("same-key"), Value: []byte(fmt.Sprintf("seq-%04d", i))}, func(r *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil && produceErr == nil {
				produceErr = err
			}
			offsets[i] = r.Offset
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	if produceErr != nil {
		return fmt.Errorf("produce: %w", produceErr)
	}
	for i, o := range offsets {
		if o != int64(i) {
			return fmt.Errorf("record %d acknowledged at offset %d", i, o)
		}
	}
	got, err := consume(ctx, topic, 0, kgo.NewOffset().AtStart(), n)
	if err != nil {
		return err
	}
	if err := report.Checkf(len(got) == n, "consumed %d records, want exactly %d", len(got), n); err != nil {
		return err
	}
	for i, r := range got {
		if string(r.Value) != fmt.Sprintf("seq-%04d", i) || r.Offset != int64(i) {
			return fmt.Errorf("position %d: offset %d value %q", i, r.Offset, r.Value)
		}
		// A producer id on the stored batches shows the producer really
		// was idempotent (franz-go falls back silently otherwise).
		if r.ProducerID < 0 {
			return fmt.Errorf("record %d has no producer id: the producer was not idempotent", i)
		}
	}
	return nil
}

func scenarioPositions(ctx context.Context) error {
	topic := prefix + "-positions"
	if err := createTopic(ctx, topic, 1, nil); err != nil {
		return err
	}
	base := time.Now().Add(-100 * time.Second).Truncate(time.Millisecond)
	records := make([]*kgo.Record, 20)
	for i := range records {
		records[i] = &kgo.Record{Topic: topic, Partition: 0, Value: []byte(fmt.Sprintf("v%d", i)),
			Timestamp: base.Add(time.Duration(i) * time.Second)}
	}
	if _, err := produce(ctx, records); err != nil {
		return err
	}
	startOffsets, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return err
	}
	endOffsets, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return err
	}
	lo, _ := startOffsets.Lookup(topic, 0)
	hi, _ := endOffsets.Lookup(topic, 0)
	if err := report.Checkf(lo.Err == nil && hi.Err == nil && lo.Offset == 0 && hi.Offset == 20,
		"watermarks %d..%d (errors %v, %v), want 0..20", lo.Offset, hi.Offset, lo.Err, hi.Err); err != nil {
		return err
	}
	milli := base.Add(7500 * time.Millisecond).UnixMilli()
	afterMilli, err := adm.ListOffsetsAfterMilli(ctx, milli, topic)
	if err != nil {
		return err
	}
	at, _ := afterMilli.Lookup(topic, 0)
	if err := report.Checkf(at.Err == nil && at.Offset == 8 && at.Timestamp == base.Add(8*time.Second).UnixMilli(),
		"offset for time: offset %d timestamp %d err %v, want 8", at.Offset, at.Timestamp, at.Err); err != nil {
		return err
	}

	// The same three positions through a consumer's reset offset.
	first := func(reset kgo.Offset, produceAfterStart bool) (*kgo.Record, error) {
		cl, err := newClient(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(reset))
		if err != nil {
			return nil, err
		}
		defer cl.Close()
		next := 20
		for {
			if produceAfterStart {
				// kgo resolves "latest" in the background, so keep
				// appending one record per poll round until the consumer
				// sees one: it must be one of these, never an older one.
				v := []byte(fmt.Sprintf("v%d", next))
				if _, err := produce(ctx, []*kgo.Record{{Topic: topic, Partition: 0, Value: v}}); err != nil {
					return nil, err
				}
				next++
			}
			pollCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			fetches := cl.PollFetches(pollCtx)
			cancel()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			for _, e := range fetches.Errors() {
				if !errors.Is(e.Err, context.DeadlineExceeded) {
					return nil, e.Err
				}
			}
			if rs := fetches.Records(); len(rs) > 0 {
				return rs[0], nil
			}
		}
	}
	r, err := first(kgo.NewOffset().AtStart(), false)
	if err != nil {
		return fmt.Errorf("earliest: %w", err)
	}
	if err := report.Checkf(r.Offset == 0 && string(r.Value) == "v0", "earliest: first record %d %q", r.Offset, r.Value); err != nil {
		return err
	}
	r, err = first(kgo.NewOffset().AfterMilli(milli), false)
	if err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	if err := report.Checkf(r.Offset == 8 && string(r.Value) == "v8", "timestamp: first record %d %q", r.Offset, r.Value); err != nil {
		return err
	}
	r, err = first(kgo.NewOffset().AtEnd(), true)
	if err != nil {
		return fmt.Errorf("latest: %w", err)
	}
	return report.Checkf(r.Offset >= 20 && string(r.Value) == fmt.Sprintf("v%d", r.Offset),
		"latest: first record %d %q, want one appended after the consumer started", r.Offset, r.Value)
}

// member is one consumer of a group, with its current assignment (from the
// rebalance callbacks) and the records it consumed.
type member struct {
	cl       *kgo.Client
	mu       sync.Mutex
	assigned map[int32]bool
	seen     map[string]bool
	done     chan struct{}
}

func joinGroup(topic, group string, kip848 bool) (*member, error) {
	m := &member{assigned: map[int32]bool{}, seen: map[string]bool{}, done: make(chan struct{})}
	update := func(ps map[string][]int32, add bool) {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, p := range ps[topic] {
			if add {
				m.assigned[p] = true
			} else {
				delete(m.assigned, p)
			}
		}
	}
	opts := []kgo.Opt{
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { update(ps, true) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { update(ps, false) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { update(ps, false) }),
	}
	if kip848 {
		// KIP-848: the broker assigns; franz-go needs the range or sticky
		// balancer for it (the default cooperative-sticky stays classic).
		opts = append(opts, kgo.ServerSideBalancer(), kgo.Balancers(kgo.RangeBalancer()))
	} else {
		// Classic protocol, default balancer; short heartbeats so that
		// rebalances are noticed quickly.
		opts = append(opts, kgo.HeartbeatInterval(500*time.Millisecond), kgo.SessionTimeout(10*time.Second))
	}
	cl, err := newClient(opts...)
	if err != nil {
		return nil, err
	}
	m.cl = cl
	go func() {
		defer close(m.done)
		for {
			fetches := cl.PollFetches(context.Background())
			if fetches.IsClientClosed() {
				return
			}
			fetches.EachRecord(func(r *kgo.Record) {
				m.mu.Lock()
				m.seen[string(r.Value)] = true
				m.mu.Unlock()
			})
		}
	}()
	return m, nil
}

func (m *member) partitions() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ps []int32
	for p := range m.assigned {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

func (m *member) leave() {
	m.cl.Close()
	<-m.done
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

func scenarioGroupRebalance(ctx context.Context, kip848 bool) error {
	kind := "classic"
	if kip848 {
		kind = "consumer"
	}
	topic := prefix + "-group-" + kind
	group := prefix + "-g-" + kind
	if kip848 {
		// franz-go falls back to the classic protocol silently when the
		// broker lacks ConsumerGroupHeartbeat v1: say so rather than fail
		// later on ConsumerGroupDescribe.
		versions, err := adm.ApiVersions(ctx)
		if err != nil {
			return err
		}
		for _, v := range versions {
			if v.Err != nil {
				return v.Err
			}
			if max, ok := v.KeyMaxVersion(68); !ok || max < 1 {
				return fmt.Errorf("broker %d does not offer ConsumerGroupHeartbeat v1 (KIP-848)", v.NodeID)
			}
		}
	}
	if err := createTopic(ctx, topic, 4, nil); err != nil {
		return err
	}
	var records []*kgo.Record
	for i := 0; i < 40; i++ {
		records = append(records, &kgo.Record{Topic: topic, Partition: int32(i % 4), Value: []byte(fmt.Sprintf("r%d", i))})
	}
	if _, err := produce(ctx, records); err != nil {
		return err
	}

	a, err := joinGroup(topic, group, kip848)
	if err != nil {
		return err
	}
	defer a.leave()
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
	b, err = joinGroup(topic, group, kip848)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, "two members share the four partitions", func() bool {
		pa, pb := a.partitions(), b.partitions()
		return len(pa) == 2 && len(pb) == 2 && len(slices.Compact(slices.Sorted(slices.Values(append(pa, pb...))))) == 4
	}, state); err != nil {
		return err
	}

	// The broker's view of the group matches the protocol we asked for.
	if kip848 {
		described, err := adm.DescribeConsumerGroups(ctx, group)
		if err != nil {
			return fmt.Errorf("ConsumerGroupDescribe: %w", err)
		}
		d := described[group]
		if d.Err != nil {
			return fmt.Errorf("ConsumerGroupDescribe: %w", d.Err)
		}
		if err := report.Checkf(len(d.Members) == 2 && d.AssignorName == "range", "described %d members, assignor %q",
			len(d.Members), d.AssignorName); err != nil {
			return err
		}
	} else {
		described, err := adm.DescribeGroups(ctx, group)
		if err != nil {
			return err
		}
		d := described[group]
		if err := report.Checkf(d.Err == nil && d.ProtocolType == "consumer" && d.Protocol == "cooperative-sticky" && len(d.Members) == 2,
			"described: protocol %q/%q, %d members, err %v", d.ProtocolType, d.Protocol, len(d.Members), d.Err); err != nil {
			return err
		}
	}
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return err
	}
	if l, ok := listed[group]; !ok || (l.GroupType != "" && l.GroupType != kind) {
		return fmt.Errorf("group listed %v with type %q, want type %q", ok, l.GroupType, kind)
	}

	b.leave()
	if err := waitFor(ctx, "the survivor owns all four partitions again", func() bool { return len(a.partitions()) == 4 }, state); err != nil {
		return err
	}
	// Together the members consumed everything.
	return waitFor(ctx, "all 40 records consumed by the group", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, r := range records {
			if !a.seen[string(r.Value)] && !b.seen[string(r.Value)] {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("a saw %d, b saw %d", len(a.seen), len(b.seen)) })
}

func scenarioOffsets(ctx context.Context) error {
	topic := prefix + "-commits"
	if err := createTopic(ctx, topic, 3, nil); err != nil {
		return err
	}
	// A group member consumes partition records and commits what it read.
	records := make([]*kgo.Record, 10)
	for i := range records {
		records[i] = &kgo.Record{Topic: topic, Partition: 2, Value: []byte(fmt.Sprintf("c%d", i))}
	}
	if _, err := produce(ctx, records); err != nil {
		return err
	}
	group := prefix + "-commits"
	cl, err := newClient(kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	var got []*kgo.Record
	for len(got) < 10 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			cl.Close()
			return fmt.Errorf("consumed %d of 10: %w", len(got), ctx.Err())
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Partition == 2 {
				got = append(got, r)
			}
		})
	}
	err = cl.CommitRecords(ctx, got...)
	cl.Close()
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	fetched, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return fmt.Errorf("fetch offsets: %w", err)
	}
	o, ok := fetched.Lookup(topic, 2)
	if err := report.Checkf(ok && o.Err == nil && o.At == 10, "committed offset of partition 2: %+v (found %v), want 10", o, ok); err != nil {
		return err
	}

	// An admin commit with metadata, as tools do, read back.
	var os kadm.Offsets
	os.Add(kadm.Offset{Topic: topic, Partition: 1, At: 0, LeaderEpoch: -1, Metadata: "checkpoint"})
	committed, err := adm.CommitOffsets(ctx, group, os)
	if err != nil {
		return err
	}
	if err := committed.Error(); err != nil {
		return fmt.Errorf("admin commit: %w", err)
	}
	fetched, err = adm.FetchOffsets(ctx, group)
	if err != nil {
		return err
	}
	o1, _ := fetched.Lookup(topic, 1)
	o2, _ := fetched.Lookup(topic, 2)
	return report.Checkf(o1.Err == nil && o1.At == 0 && o1.Metadata == "checkpoint" && o2.At == 10,
		"after the admin commit: partition 1 %+v, partition 2 %+v", o1, o2)
}

func scenarioListDescribeGroups(ctx context.Context) error {
	group := prefix + "-commits"
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return err
	}
	var names []string
	for name := range listed {
		names = append(names, name)
	}
	sort.Strings(names)
	l, ok := listed[group]
	if err := report.Checkf(ok, "%s not among listed groups %v", group, names); err != nil {
		return err
	}
	if err := report.Checkf(l.ProtocolType == "consumer" && l.State == "Empty", "listed: protocol type %q state %q", l.ProtocolType, l.State); err != nil {
		return err
	}
	described, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return err
	}
	d, ok := described[group]
	return report.Checkf(ok && d.Err == nil && d.State == "Empty" && d.ProtocolType == "consumer" && len(d.Members) == 0,
		"described: %+v", d)
}

func scenarioDeleteRecords(ctx context.Context) error {
	topic := prefix + "-delete-records"
	if err := createTopic(ctx, topic, 1, nil); err != nil {
		return err
	}
	records := make([]*kgo.Record, 10)
	for i := range records {
		records[i] = &kgo.Record{Topic: topic, Partition: 0, Value: []byte(fmt.Sprintf("d%d", i))}
	}
	if _, err := produce(ctx, records); err != nil {
		return err
	}
	var os kadm.Offsets
	os.AddOffset(topic, 0, 4, -1)
	deleted, err := adm.DeleteRecords(ctx, os)
	if err != nil {
		return err
	}
	d, ok := deleted.Lookup(topic, 0)
	if err := report.Checkf(ok && d.Err == nil && d.LowWatermark == 4, "delete records: %+v", d); err != nil {
		return err
	}
	start, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return err
	}
	lo, _ := start.Lookup(topic, 0)
	if err := report.Checkf(lo.Err == nil && lo.Offset == 4, "earliest offset %d (err %v), want 4", lo.Offset, lo.Err); err != nil {
		return err
	}
	got, err := consume(ctx, topic, 0, kgo.NewOffset().AtStart(), 6)
	if err != nil {
		return err
	}
	return report.Checkf(len(got) == 6 && got[0].Offset == 4 && string(got[0].Value) == "d4",
		"reading from earliest: %d records, first at %d", len(got), got[0].Offset)
}

// scenarioTransactions: three transactions (commit, abort, commit) from a
// transactional client; read_committed consumers see the committed records
// only, read_uncommitted ones all of them.
func scenarioTransactions(ctx context.Context) error {
	topic := prefix + "-txn"
	if err := createTopic(ctx, topic, 1, nil); err != nil {
		return err
	}
	cl, err := newClient(kgo.TransactionalID(prefix+"-txn"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return err
	}
	defer cl.Close()
	steps := []struct {
		values []string
		commit bool
	}{{[]string{"a1", "a2"}, true}, {[]string{"b1"}, false}, {[]string{"c1"}, true}}
	for _, step := range steps {
		if err := cl.BeginTransaction(); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		for _, v := range step.values {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 0, Value: []byte(v)}).FirstErr(); err != nil {
				return fmt.Errorf("produce: %w", err)
			}
		}
		if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(step.commit)); err != nil {
			return fmt.Errorf("end transaction (commit %v): %w", step.commit, err)
		}
	}
	values := func(rs []*kgo.Record) string {
		var out []string
		for _, r := range rs {
			out = append(out, string(r.Value))
		}
		return strings.Join(out, " ")
	}
	committed, err := consume(ctx, topic, 0, kgo.NewOffset().AtStart(), 3, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return err
	}
	if got := values(committed); got != "a1 a2 c1" {
		return fmt.Errorf("read_committed reads a1 a2 c1, got %q", got)
	}
	all, err := consume(ctx, topic, 0, kgo.NewOffset().AtStart(), 4)
	if err != nil {
		return err
	}
	if got := values(all); got != "a1 a2 b1 c1" {
		return fmt.Errorf("read_uncommitted reads all four, got %q", got)
	}
	return nil
}
