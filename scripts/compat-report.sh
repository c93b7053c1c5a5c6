#!/usr/bin/env bash
# Regenerates the client compatibility matrix in docs/compatibility.md from a
# real run: the test command's installs, a real Apache Kafka 4.4.0 started as
# the reference (scripts/kafka-ref.sh), then the report-card test, which runs
# every client's scenarios against Strata and against Kafka, and franz-go's
# full kgo suite against both; the matrix (target/compat/matrix.md) and the
# suite's counts (target/compat/kgo.json) replace the section between the
# markers.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/java-deps.sh
started=$(./scripts/kafka-ref.sh)
kafka=$(sed -n 's/^bootstrap=//p' <<<"$started")
dir=$(sed -n 's/^dir=//p' <<<"$started")
trap './scripts/kafka-ref.sh stop "$dir" || true' EXIT
echo "==> reference Apache Kafka at $kafka"
STRATA_COMPAT_KAFKA=$kafka STRATA_KGO_FULL=1 \
  ./scripts/test.sh -E 'test(compat_report_card) | test(franz_go_kgo_suite)'
python3 - <<'PY'
import pathlib
doc = pathlib.Path("docs/compatibility.md")
text = doc.read_text()
start, end = "<!-- matrix:start -->", "<!-- matrix:end -->"
import json
matrix = pathlib.Path("target/compat/matrix.md").read_text()
kgo = json.loads(pathlib.Path("target/compat/kgo.json").read_text())
def counts(r):
    return f"{r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped ({r['seconds']} s)"
matrix += (f"\nfranz-go's own kgo integration suite ({kgo['strata']['version']}, mode "
           f"{kgo['strata']['mode']}, TestTxnEtl included): Strata {counts(kgo['strata'])}")
if kgo.get("kafka"):
    matrix += f"; Apache Kafka {counts(kgo['kafka'])}"
matrix += ".\n"
before, rest = text.split(start, 1)
_, after = rest.split(end, 1)
doc.write_text(f"{before}{start}\n{matrix}{end}{after}")
print("docs/compatibility.md updated")
PY
