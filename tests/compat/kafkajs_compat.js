// Compatibility scenarios driven by kafkajs (pure JavaScript).
// Usage: node kafkajs_compat.js BOOTSTRAP PREFIX
// Prints one JSON object: {client, version, results: {scenario: "pass" | "fail: reason"}}.
// Snappy and LZ4 use the kafkajs-snappy and kafkajs-lz4 codec plugins, zstd a
// codec over @bokuweb/zstd-wasm (the zstd library built to WebAssembly: no
// native build), when installed; without a codec the scenario fails with
// kafkajs's own message.
const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs')

const [bootstrap, prefix] = process.argv.slice(2)
const results = {}
const kafka = new Kafka({ clientId: 'strata-compat', brokers: [bootstrap], logLevel: logLevel.NOTHING })
const admin = kafka.admin()

function tryRequire(name) {
  try {
    return require(name)
  } catch (error) {
    return null
  }
}
const snappy = tryRequire('kafkajs-snappy')
if (snappy) CompressionCodecs[CompressionTypes.Snappy] = snappy
const lz4 = tryRequire('kafkajs-lz4')
if (lz4) CompressionCodecs[CompressionTypes.LZ4] = new lz4().codec
const zstd = tryRequire('@bokuweb/zstd-wasm')
// kafkajs looks a codec up as a factory of {compress(encoder), decompress(buffer)}.
const zstdCodec = () => ({
  async compress(encoder) {
    return Buffer.from(zstd.compress(encoder.buffer, 3))
  },
  async decompress(buffer) {
    return Buffer.from(zstd.decompress(buffer))
  },
})

function check(condition, message) {
  if (!condition) throw new Error(message)
}

async function scenario(name, fn) {
  try {
    await fn()
    results[name] = 'pass'
  } catch (error) {
    results[name] = `fail: ${String(error && error.message ? error.message : error).split('\n')[0]}`
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function consumeAll(topic, count, groupId, readUncommitted = false) {
  const consumer = kafka.consumer({ groupId, sessionTimeout: 6000, heartbeatInterval: 500, readUncommitted })
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  const got = []
  await consumer.run({ eachMessage: async ({ message }) => { got.push(message) } })
  const deadline = Date.now() + 30000
  while (got.length < count && Date.now() < deadline) await sleep(100)
  await consumer.disconnect()
  return got
}

async function main() {
  if (zstd) {
    await zstd.init()
    CompressionCodecs[CompressionTypes.ZSTD] = zstdCodec
  }
  await admin.connect()
  const dataTopic = `${prefix}-data`
  await admin.createTopics({ topics: [{ topic: dataTopic, numPartitions: 3 }] })

  await scenario('admin: create, list and delete topics', async () => {
    const name = `${prefix}-admin`
    await admin.createTopics({ topics: [{ topic: name, numPartitions: 2, configEntries: [{ name: 'retention.ms', value: '-1' }] }] })
    check((await admin.listTopics()).includes(name), 'created topic is listed')
    await admin.deleteTopics({ topics: [name] })
    check(!(await admin.listTopics()).includes(name), 'deleted topic is gone')
  })

  await scenario('admin: describe topic configs', async () => {
    const described = await admin.describeConfigs({ resources: [{ type: 2, name: dataTopic }] })
    const names = described.resources[0].configEntries.map((e) => e.configName)
    check(names.includes('max.message.bytes') && names.includes('retention.ms'), `configs: ${names}`)
  })

  const codecs = [['none', CompressionTypes.None], ['gzip', CompressionTypes.GZIP],
    ['snappy', CompressionTypes.Snappy], ['lz4', CompressionTypes.LZ4], ['zstd', CompressionTypes.ZSTD]]
  for (const [label, codec] of codecs) {
    await scenario(`produce and consume: ${label}, keys, headers, null values`, async () => {
      const topic = `${prefix}-codec-${label}`
      await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] })
      const producer = kafka.producer()
      await producer.connect()
      const messages = []
      for (let i = 0; i < 50; i++) {
        messages.push({ key: `k${i}`, value: i % 10 === 3 ? null : `${label}-${i}`, headers: { h: `${i}` }, partition: 0 })
      }
      try {
        await producer.send({ topic, acks: -1, compression: codec, messages })
      } finally {
        await producer.disconnect()
      }
      const got = await consumeAll(topic, 50, `${prefix}-read-${label}`)
      check(got.length === 50, `consumed ${got.length} of 50`)
      got.forEach((m, i) => {
        check(m.key.toString() === `k${i}`, `key ${i}`)
        check(i % 10 === 3 ? m.value === null : m.value.toString() === `${label}-${i}`, `value ${i}`)
        check(m.headers.h.toString() === `${i}`, `header ${i}`)
      })
    })
  }

  await scenario('idempotent producer: 1000 records in order', async () => {
    const topic = `${prefix}-idempotent`
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] })
    // kafkajs is not idempotent by default; this is its opt-in.
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
    await producer.connect()
    for (let batch = 0; batch < 10; batch++) {
      const messages = []
      for (let i = batch * 100; i < (batch + 1) * 100; i++) messages.push({ value: `i${i}`, partition: 0 })
      await producer.send({ topic, acks: -1, messages })
    }
    await producer.disconnect()
    const got = await consumeAll(topic, 1000, `${prefix}-read-idempotent`)
    check(got.length === 1000, `consumed ${got.length} of 1000`)
    got.forEach((m, i) => check(m.value.toString() === `i${i}`, `record ${i} in order`))
  })

  await scenario('large message near the 1 MB limit', async () => {
    const topic = `${prefix}-large`
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] })
    const big = Buffer.alloc(998400, 7)
    const producer = kafka.producer()
    await producer.connect()
    await producer.send({ topic, acks: -1, messages: [{ value: big, partition: 0 }] })
    await producer.disconnect()
    const got = await consumeAll(topic, 1, `${prefix}-read-large`)
    check(got.length === 1 && Buffer.compare(got[0].value, big) === 0, 'large value round-trips')
  })

  await scenario('consume from earliest, latest and a timestamp', async () => {
    const topic = `${prefix}-positions`
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] })
    const producer = kafka.producer()
    await producer.connect()
    const base = Date.now() - 100000
    const messages = []
    for (let i = 0; i < 20; i++) messages.push({ value: `v${i}`, partition: 0, timestamp: `${base + i * 1000}` })
    await producer.send({ topic, acks: -1, messages })
    await producer.disconnect()
    const offsets = await admin.fetchTopicOffsets(topic)
    check(offsets[0].low === '0' && offsets[0].high === '20', `offsets ${JSON.stringify(offsets)}`)
    const byTime = await admin.fetchTopicOffsetsByTimestamp(topic, base + 7500)
    check(byTime[0].offset === '8', `offset for time ${JSON.stringify(byTime)}`)
  })

  await scenario('consumer group: rebalance on join and leave', async () => {
    const topic = `${prefix}-group`
    await admin.createTopics({ topics: [{ topic, numPartitions: 4 }] })
    const groupId = `${prefix}-g`
    const make = async () => {
      const c = kafka.consumer({ groupId, sessionTimeout: 6000, heartbeatInterval: 500 })
      const state = { assigned: [] }
      c.on(c.events.GROUP_JOIN, (e) => { state.assigned = (e.payload.memberAssignment[topic] || []) })
      await c.connect()
      await c.subscribe({ topic, fromBeginning: true })
      await c.run({ eachMessage: async () => {} })
      return { c, state }
    }
    const waitFor = async (cond, what) => {
      const deadline = Date.now() + 40000
      while (!cond() && Date.now() < deadline) await sleep(100)
      check(cond(), what)
    }
    const a = await make()
    await waitFor(() => a.state.assigned.length === 4, 'one member owns everything')
    const b = await make()
    await waitFor(() => a.state.assigned.length === 2 && b.state.assigned.length === 2, 'two members share four partitions')
    await b.c.disconnect()
    await waitFor(() => a.state.assigned.length === 4, 'the survivor owns everything again')
    await a.c.disconnect()
  })

  await scenario('offset commit and fetch', async () => {
    const groupId = `${prefix}-commits`
    await admin.setOffsets({ groupId, topic: dataTopic, partitions: [{ partition: 1, offset: '0' }] })
    const fetched = await admin.fetchOffsets({ groupId, topics: [dataTopic] })
    const p1 = fetched[0].partitions.find((p) => p.partition === 1)
    check(p1 && p1.offset === '0', `fetched ${JSON.stringify(fetched)}`)
  })

  await scenario('admin: list and describe groups', async () => {
    const listed = await admin.listGroups()
    check(listed.groups.some((g) => g.groupId === `${prefix}-commits`), `listed ${JSON.stringify(listed)}`)
    const described = await admin.describeGroups([`${prefix}-commits`])
    check(described.groups.length === 1, 'group described')
  })

  await scenario('transactions: commit and abort, read_committed skips the aborted records', async () => {
    const topic = `${prefix}-txn`
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] })
    const producer = kafka.producer({ transactionalId: `${prefix}-txn`, idempotent: true, maxInFlightRequests: 1 })
    await producer.connect()
    try {
      let txn = await producer.transaction()
      await txn.send({ topic, messages: [{ value: 'a1', partition: 0 }, { value: 'a2', partition: 0 }] })
      await txn.commit()
      txn = await producer.transaction()
      await txn.send({ topic, messages: [{ value: 'b1', partition: 0 }] })
      await txn.abort()
      txn = await producer.transaction()
      await txn.send({ topic, messages: [{ value: 'c1', partition: 0 }] })
      await txn.commit()
    } finally {
      await producer.disconnect()
    }
    const committed = (await consumeAll(topic, 3, `${prefix}-txn-rc`)).map((m) => m.value.toString())
    check(committed.join(' ') === 'a1 a2 c1', `read_committed reads a1 a2 c1, got ${committed}`)
    const all = (await consumeAll(topic, 4, `${prefix}-txn-ru`, true)).map((m) => m.value.toString())
    check(all.join(' ') === 'a1 a2 b1 c1', `read_uncommitted reads all four, got ${all}`)
  })

  await scenario("transactions: sendOffsetsToTransaction commits the group's offsets on commit only", async () => {
    const src = `${prefix}-txn-in`
    const dst = `${prefix}-txn-out`
    const groupId = `${prefix}-txn-group`
    await admin.createTopics({ topics: [{ topic: src, numPartitions: 1 }, { topic: dst, numPartitions: 1 }] })
    const producer = kafka.producer({ transactionalId: `${prefix}-txn-offsets`, idempotent: true, maxInFlightRequests: 1 })
    await producer.connect()
    try {
      let txn = await producer.transaction()
      await txn.send({ topic: dst, messages: [{ value: 'x', partition: 0 }] })
      await txn.sendOffsets({ consumerGroupId: groupId, topics: [{ topic: src, partitions: [{ partition: 0, offset: '5' }] }] })
      await txn.commit()
      txn = await producer.transaction()
      await txn.send({ topic: dst, messages: [{ value: 'y', partition: 0 }] })
      await txn.sendOffsets({ consumerGroupId: groupId, topics: [{ topic: src, partitions: [{ partition: 0, offset: '9' }] }] })
      await txn.abort()
    } finally {
      await producer.disconnect()
    }
    const fetched = await admin.fetchOffsets({ groupId, topics: [src] })
    const p0 = fetched[0].partitions.find((p) => p.partition === 0)
    check(p0 && p0.offset === '5', `the committed transaction's offset 5 stands, not the aborted 9: ${JSON.stringify(fetched)}`)
  })

  await admin.disconnect()
  const version = require('kafkajs/package.json').version
  process.stdout.write(JSON.stringify({ client: 'kafkajs', version, results }) + '\n')
}

main().catch((error) => {
  process.stdout.write(JSON.stringify({ client: 'kafkajs', version: 'unknown', results: { setup: `fail: ${error.message}` } }) + '\n')
})
