#!/usr/bin/env bash
# Regenerates the client compatibility matrix in docs/compatibility.md from a
# real run: the test command's installs, then the report-card test, whose
# matrix (target/compat/matrix.md) replaces the section between the markers.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/test.sh -E 'test(compat_report_card)'
python3 - <<'PY'
import pathlib
doc = pathlib.Path("docs/compatibility.md")
text = doc.read_text()
start, end = "<!-- matrix:start -->", "<!-- matrix:end -->"
matrix = pathlib.Path("target/compat/matrix.md").read_text()
before, rest = text.split(start, 1)
_, after = rest.split(end, 1)
doc.write_text(f"{before}{start}\n{matrix}{end}{after}")
print("docs/compatibility.md updated")
PY
