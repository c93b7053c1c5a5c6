"""Reads a `strata export parquet` directory back for the integration tests,
with pyarrow and with duckdb, and prints one JSON object:
{"pyarrow": {"schema": {...}, "rows": [...]}, "duckdb": {...}}, each row
[partition, offset, timestamp millis, timestamp type, key hex, value hex,
[[header key, header value hex], ...]] (null for nulls), sorted by
(partition, offset). The partition is checked against the Hive directory
(partition=N) by both readers. Usage: TOPIC_DIR"""
import datetime
import json
import sys

import duckdb
import pyarrow.dataset as ds

topic_dir = sys.argv[1]


def hexed(value):
    return None if value is None else bytes(value).hex()


def millis(ts):
    if ts.tzinfo is None:
        raise SystemExit(f"timestamp without a time zone: {ts!r}")
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (ts - epoch) // datetime.timedelta(milliseconds=1)


def row(partition, offset, ts, ts_type, key, value, headers):
    return [
        partition,
        offset,
        millis(ts),
        ts_type,
        hexed(key),
        hexed(value),
        [[h["key"], hexed(h["value"])] for h in headers],
    ]


# pyarrow: the whole directory as one dataset; the Hive directory names
# give `partition` too, and must agree with the column in the files.
dataset = ds.dataset(topic_dir, format="parquet", partitioning="hive")
table = dataset.to_table()
schema = {field.name: str(field.type) for field in table.schema}
pyarrow_rows = []
for r in table.to_pylist():
    pyarrow_rows.append(
        row(r["partition"], r["offset"], r["timestamp"], r["timestamp_type"],
            r["key"], r["value"], r["headers"])
    )
for fragment in dataset.get_fragments():
    directory = int(fragment.path.split("partition=")[1].split("/")[0])
    column = set(fragment.to_table(columns=["partition"]).column(0).to_pylist())
    if column and column != {directory}:
        raise SystemExit(f"{fragment.path}: partition column {column} in partition={directory}")
pyarrow_rows.sort(key=lambda r: (r[0], r[1]))

# duckdb: a glob with Hive partitioning (the directory's partition value).
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
glob = f"{topic_dir}/**/*.parquet"
relation = f"read_parquet('{glob}', hive_partitioning = true)"
duck_types = {name: kind for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
duck_rows = []
for p, offset, ts, ts_type, key, value, headers in con.execute(
    f"SELECT partition, \"offset\", \"timestamp\", timestamp_type, key, value, headers "
    f"FROM {relation} ORDER BY partition, \"offset\""
).fetchall():
    duck_rows.append(row(p, offset, ts, ts_type, key, value, headers))
mismatched = con.execute(
    f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = false, filename = true) "
    f"WHERE filename NOT LIKE '%/partition=' || partition || '/%'"
).fetchone()[0]
if mismatched:
    raise SystemExit(f"duckdb: {mismatched} rows whose partition column differs from their directory")

print(json.dumps({
    "pyarrow": {"schema": schema, "rows": pyarrow_rows},
    "duckdb": {"schema": duck_types, "rows": duck_rows},
}))
