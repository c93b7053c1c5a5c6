-- The advertised address of each of a broker's listeners, in Kafka's
-- notation (NAME://host:port,...); host and port stay its inter-broker
-- listener's. Empty in rows an older broker wrote.

ALTER TABLE brokers ADD COLUMN endpoints TEXT NOT NULL DEFAULT '';
