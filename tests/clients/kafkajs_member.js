// A kafkajs consumer-group member for the integration tests: prints every
// consumed value on its own line. Usage: node kafkajs_member.js BOOTSTRAP GROUP TOPIC
const { Kafka, logLevel } = require('kafkajs')

const [bootstrap, group, topic] = process.argv.slice(2)
const kafka = new Kafka({ clientId: 'kafkajs-member', brokers: [bootstrap], logLevel: logLevel.ERROR })
const consumer = kafka.consumer({ groupId: group, sessionTimeout: 6000, heartbeatInterval: 500 })

async function main() {
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  await consumer.run({
    eachMessage: async ({ message }) => {
      process.stdout.write(message.value.toString() + '\n')
    },
  })
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
