#!/usr/bin/env bash
# Runs franz-go's own kgo integration test suite (v1.22.3, compiled by
# scripts/go-deps.sh into target/go/bin/kgo.test) against a broker.
#
#   scripts/franz-go-suite.sh [--quick] [--txn] BOOTSTRAP [extra test flags]
#
#   --quick  the subset for every CI run (52-80 s against Apache Kafka 4.4 on
#            this 2-core machine): every kgo test except the share-group
#            tests (TestShareGroup*: Kafka 4.2 share groups, TestShareGroupETL
#            alone takes 2-3 min), with KGO_TEST_RECORDS=20000 records per
#            ETL test instead of franz-go's default 500000.
#            Without it: the full suite at franz-go's defaults (128-164 s).
#   --txn    also run the transaction test (TestTxnEtl, the only kgo test
#            that needs transactions; ~70 s with 500000 records on Kafka,
#            25 s with 20000 on Strata), skipped by default; the test suite
#            (tests/it/compat.rs) always passes it.
#   extra test flags go to the test binary after ours (later flags win), e.g.
#            -test.run 'TestGroupETL' or -test.count 3; write them as
#            -test.NAME, the test binary does not know `go test`'s short
#            names. Note that -test.skip replaces our skip list.
#
# Environment (franz-go's helpers_test.go reads these; set ones pass through):
#   KGO_SEEDS                  set to BOOTSTRAP
#   KGO_TEST_RF                replication factor of test topics (default 1 here)
#   KGO_TEST_RECORDS           records per ETL test (default: 500000; 20000 with --quick)
#   KGO_TEST_MAX_TOPIC_PARTS   caps the 7/11/31 partitions of test topics
#   KGO_LOG_LEVEL              client log level: info (default), debug, none
#   KGO_TEST_TLS               ca:PATH,cert:PATH,key:PATH to dial with TLS
#   KGO_TEST_SCRAM, KGO_TEST_SCRAM_SEEDS   user:pass[:256|512] and a SASL/SCRAM
#                              listener; TestSCRAMAuth* skip without them
#   KGO_TEST_OAUTH_SEEDS       an OAUTHBEARER listener; TestOAuthAuth skips without
#   KGO_TEST_UNSAFE            only for the transaction test (EndBeginTxnUnsafe)
#   KGO_TEST_CHAOS=1           kills client connections at random (stress mode)
# (franz-go's CI also sets KGO_TEST_STABLE_FETCH, which v1.22.3 does not read.)
# Tests adapt to the broker's ApiVersions: the KIP-848 variants (".../848")
# run only if it offers ConsumerGroupHeartbeat v1, the static-membership ones
# with JoinGroup v5+, the share-group tests with ShareFetch/ShareAcknowledge
# v2; otherwise they skip (see "skipped_subtests" in the JSON).
#
# The full test output goes to target/go/kgo-suite-{quick,full}.log. The last
# line on stdout is one JSON object:
#   {"client":"franz-go kgo suite","version":"v1.22.3","mode":"quick|full[+txn]",
#    "passed":N,"failed":M,"skipped":K,"failures":[top-level test names],
#    "failed_subtests":[...],"skipped_subtests":[...],"seconds":S}
# (counts are of top-level tests). Exits non-zero if any test failed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

mode=full
txn=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) mode=quick; shift ;;
    --txn) txn=1; shift ;;
    --) shift; break ;;
    -*) echo "franz-go-suite.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -lt 1 ]; then
  echo "usage: $0 [--quick] [--txn] BOOTSTRAP [extra test flags]" >&2
  exit 2
fi
bootstrap=$1
shift

scripts/go-deps.sh
kgo_dir=$root/target/go/franz-go/pkg/kgo
version=$(cat "$root/target/go/franz-go/.version")

skip=()
if [ "$txn" = 1 ]; then mode_name=$mode+txn; else mode_name=$mode; skip+=(TestTxnEtl); fi
if [ "$mode" = quick ]; then
  skip+=('TestShareGroup.*')
  : "${KGO_TEST_RECORDS:=20000}"
  timeout=6m
else
  timeout=20m
fi
flags=(-test.v "-test.timeout=$timeout")
if [ ${#skip[@]} -gt 0 ]; then
  flags+=("-test.skip=^($(IFS='|'; echo "${skip[*]}"))\$")
fi

export KGO_SEEDS=$bootstrap
export KGO_TEST_RF=${KGO_TEST_RF:-1}
[ -z "${KGO_TEST_RECORDS:-}" ] || export KGO_TEST_RECORDS

log=$root/target/go/kgo-suite-$mode.log
echo "==> franz-go $version kgo suite ($mode_name) against $bootstrap; log: ${log#"$root"/}" >&2
start=$SECONDS
status=0
# The binary runs in the package directory, as `go test` does: some tests
# read the package's source files (TestOptValuesCoversEveryOption).
(cd "$kgo_dir" && exec "$root/target/go/bin/kgo.test" "${flags[@]}" "$@") >"$log" 2>&1 || status=$?
seconds=$((SECONDS - start))

python3 - "$log" "$status" "$version" "$mode_name" "$seconds" <<'PY'
import json
import re
import sys

log, status, version, mode, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
result_re = re.compile(r"^\s*--- (PASS|FAIL|SKIP): (\S+) \(")
run_re = re.compile(r"^=== RUN\s+(\S+)$")
outcome, started, failed_sub, skipped_sub = {}, [], [], []
timed_out, running, in_running = False, [], False
with open(log, errors="replace") as f:
    for line in f:
        line = line.rstrip("\n")
        m = result_re.match(line)
        if m:
            kind, name = m.groups()
            if "/" in name:
                if kind == "FAIL":
                    failed_sub.append(name)
                elif kind == "SKIP":
                    skipped_sub.append(name)
            else:
                outcome[name] = kind
            continue
        m = run_re.match(line)
        if m and "/" not in m.group(1):
            started.append(m.group(1))
        if line.startswith("panic: test timed out"):
            timed_out, in_running = True, False
        elif timed_out and line.strip() == "running tests:":
            in_running = True
        elif in_running:
            m = re.match(r"^\s+(Test\S+) \(", line)
            if m:
                running.append(m.group(1))
            else:
                in_running = False

failures = sorted(n for n, k in outcome.items() if k == "FAIL")
# A crash or timeout leaves started tests without a result: they failed too.
if status != 0:
    for name in started:
        if name not in outcome and name not in failures:
            failures.append(name)
    for name in running:
        if "/" not in name and name not in failures:
            failures.append(name)
    if not failures:
        failures.append(f"(test binary exited with status {status})")
passed = sum(1 for k in outcome.values() if k == "PASS")
skipped = sum(1 for k in outcome.values() if k == "SKIP")
if failures:
    print(f"franz-go-suite.sh: failed: {' '.join(failures)}" + (" (test timeout)" if timed_out else ""), file=sys.stderr)
    # The messages the failed tests logged (t.Error, t.Log), for a first look:
    # go test -v names the test a line belongs to in "=== NAME/CONT/RUN" lines.
    current, shown = None, 0
    header_re = re.compile(r"^=== (?:RUN|CONT|NAME|PAUSE)\s+(\S+)$")
    with open(log, errors="replace") as f:
        for line in f:
            if line.startswith("panic: "):
                print(f"  {line.strip()[:300]}", file=sys.stderr)
            m = header_re.match(line.rstrip("\n")) or result_re.match(line)
            if m:
                current = m.groups()[-1]
                continue
            if current and current.split("/")[0] in failures and re.match(r"^\s+\S+_test\.go:\d+: ", line):
                if shown < 40:
                    print(f"  {current}: {line.strip()[:300]}", file=sys.stderr)
                shown += 1
print(json.dumps({"client": "franz-go kgo suite", "version": version, "mode": mode,
                  "passed": passed, "failed": len(failures), "skipped": skipped,
                  "failures": failures, "failed_subtests": sorted(set(failed_sub)),
                  "skipped_subtests": sorted(set(skipped_sub)),
                  "seconds": seconds}, separators=(",", ":")))
sys.exit(1 if failures or status != 0 else 0)
PY
