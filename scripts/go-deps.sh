#!/usr/bin/env bash
# Prepares the Go side of the compatibility tests, idempotently:
#   - checks for a Go toolchain (franz-go v1.22 and sarama v1.61 need Go 1.26;
#     an older Go >= 1.21 fetches 1.26 through the module proxy by itself),
#   - builds the report-card programs of tests/go (module strata/compat) into
#     target/go/bin/franzgo_compat and target/go/bin/sarama_compat,
#   - copies the franz-go v1.22.3 module source to target/go/franz-go and
#     compiles its kgo integration tests into target/go/bin/kgo.test
#     (run them with scripts/franz-go-suite.sh),
#   - builds the MinIO server (pinned below) into target/go/bin/minio: the
#     S3 server of the integration tests.
# Everything Go writes (GOPATH, module cache, build cache) stays under
# target/go, so that CI can cache it with the rest of target/.
# Prints nothing when everything is up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

franz_version=v1.22.3
# MinIO publishes no tagged Go module versions; this pseudo-version is the
# commit the Go module proxy served as latest on 2026-12-03.
minio_version=v0.0.0-20260212201848-7aac2a2c5b7c
need_minor=26   # go 1.26.0 in the go.mod of franz-go, kadm, kmsg and sarama

gobin=target/go/bin
export GOPATH="$root/target/go"
export GOMODCACHE="$root/target/go/pkg/mod"
export GOCACHE="$root/target/go/cache"
# No VCS stamping (target/go/franz-go sits inside this repository's work
# tree), never edit go.mod/go.sum implicitly, and a writable module cache
# (Go's default read-only one defeats `rm -rf target` and `cargo clean`).
export GOFLAGS="-buildvcs=false -mod=readonly -modcacherw"
export GOWORK=off

if ! command -v go >/dev/null; then
  echo "go-deps.sh: the Go toolchain (go) is missing. franz-go $franz_version and sarama" \
       "need Go 1.$need_minor or newer, newer than Debian's golang package: install it" \
       "from https://go.dev/dl/ (e.g. into /usr/local/go) and put its bin on PATH." >&2
  exit 1
fi
go_version=$(go env GOVERSION 2>/dev/null || go version | awk '{print $3}')
minor=$(sed -E 's/^go1\.([0-9]+).*/\1/' <<<"$go_version")
if ! [[ $minor =~ ^[0-9]+$ ]] || [ "$minor" -lt "$need_minor" ]; then
  if [[ $minor =~ ^[0-9]+$ ]] && [ "$minor" -ge 21 ]; then
    # Go 1.21+ downloads the toolchain named by go.mod from the module proxy.
    export GOTOOLCHAIN=auto
  else
    echo "go-deps.sh: found $go_version; franz-go $franz_version and sarama need Go 1.$need_minor" \
         "or newer (install it from https://go.dev/dl/)" >&2
    exit 1
  fi
fi

# Several tests may call this at once: one at a time.
mkdir -p "$gobin"
exec 9>target/go/.lock
flock 9

# newer_than FILE PATHS...: true when FILE is missing or any regular file
# under PATHS is newer.
newer_than() {
  local file=$1
  shift
  [ ! -e "$file" ] && return 0
  [ -n "$(find "$@" -type f -newer "$file" -print -quit)" ]
}

# The report-card programs.
for prog in franzgo_compat sarama_compat; do
  if newer_than "$gobin/$prog" tests/go/go.mod tests/go/go.sum tests/go/report "tests/go/$prog"; then
    echo "==> building $gobin/$prog" >&2
    (cd tests/go && go build -o "$root/$gobin/$prog.tmp" "./$prog")
    mv "$gobin/$prog.tmp" "$gobin/$prog"
  fi
done

# franz-go's own kgo test suite, from the module source pinned above.
src=target/go/franz-go
if [ "$(cat "$src/.version" 2>/dev/null)" != "$franz_version" ]; then
  echo "==> fetching franz-go $franz_version source into $src" >&2
  # Verified against tests/go/go.sum, which pins the same version.
  json=$(cd tests/go && go mod download -json "github.com/twmb/franz-go@$franz_version")
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
  if [ -z "$dir" ] || [ ! -f "$dir/go.mod" ]; then
    echo "go-deps.sh: go mod download gave no module directory for franz-go $franz_version:" >&2
    echo "$json" >&2
    exit 1
  fi
  rm -rf "$src" "$src.tmp" "$gobin/kgo.test"
  cp -R "$dir" "$src.tmp"
  chmod -R u+w "$src.tmp"     # the module cache is read-only
  echo "$franz_version" >"$src.tmp/.version"
  mv "$src.tmp" "$src"
fi
if [ ! -x "$gobin/kgo.test" ] || [ "$src/.version" -nt "$gobin/kgo.test" ]; then
  echo "==> compiling franz-go's kgo tests into $gobin/kgo.test" >&2
  (cd "$src" && go test -c -o "$root/$gobin/kgo.test.tmp" ./pkg/kgo)
  mv "$gobin/kgo.test.tmp" "$gobin/kgo.test"
fi

# The MinIO server (about 2 minutes to build the first time).
if [ "$(cat "$gobin/.minio-version" 2>/dev/null)" != "$minio_version" ] || [ ! -x "$gobin/minio" ]; then
  echo "==> building the MinIO server $minio_version into $gobin/minio" >&2
  GOBIN="$root/$gobin" go install "github.com/minio/minio@$minio_version"
  echo "$minio_version" >"$gobin/.minio-version"
fi
