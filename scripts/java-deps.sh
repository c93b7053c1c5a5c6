#!/usr/bin/env bash
# Prepares the Java side of the compatibility tests, idempotently:
#   - installs a JDK and Maven with apt when java/javac/mvn are missing,
#   - copies the jars pinned in tests/java/pom.xml (Apache Kafka 4.4.0 broker,
#     clients, tools, streams, slf4j-simple) into target/java/lib, with
#     Maven's cache in target/m2 (re-run only when the pom changed),
#   - compiles tests/java/src/*.java into target/java/classes (only when a
#     source changed).
# Afterwards: java -cp 'target/java/lib/*:target/java/classes' MAIN_CLASS ARGS...
# Prints nothing when everything is up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v java >/dev/null || missing+=(openjdk-17-jdk-headless)
command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || missing+=(maven)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}" >&2
  if ! { sudo_if_needed apt-get update -qq &&
         sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; }; then
    echo "java-deps.sh: need java, javac (JDK 17+) and mvn; install openjdk-17-jdk-headless and maven" >&2
    exit 1
  fi
fi
java_major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
if [ "${java_major%%.*}" -lt 17 ] 2>/dev/null; then
  echo "java-deps.sh: Kafka 4.4 needs Java 17 or newer, found $java_major" >&2
  exit 1
fi

pom=tests/java/pom.xml
lib=target/java/lib
classes=target/java/classes

# Several tests may call this at once: one at a time.
mkdir -p target/java
exec 9>target/java/.lock
flock 9

# Jars: re-copied from scratch when the pom is newer than the last copy.
if [ ! -f "$lib/.stamp" ] || [ "$pom" -nt "$lib/.stamp" ]; then
  echo "==> fetching Kafka jars with Maven into $lib (cache: target/m2)" >&2
  rm -rf "$lib"
  mkdir -p target/m2
  if ! mvn -B -Dstyle.color=never -f "$pom" -Dmaven.repo.local="$PWD/target/m2" \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies >target/java/mvn.log 2>&1; then
    grep -E 'ERROR|BUILD' target/java/mvn.log | head -n 30 >&2
    echo "java-deps.sh: Maven could not fetch the dependencies of $pom (log: target/java/mvn.log)" >&2
    exit 1
  fi
  touch "$lib/.stamp"
fi

# Classes: recompiled when any source (or the jar set) is newer than the last build.
shopt -s nullglob
sources=(tests/java/src/*.java)
stale=0
if [ ! -f "$classes/.stamp" ] || [ "$lib/.stamp" -nt "$classes/.stamp" ]; then
  stale=1
else
  for src in "${sources[@]}"; do
    if [ "$src" -nt "$classes/.stamp" ]; then stale=1; break; fi
  done
fi
if [ "$stale" = 1 ] && [ ${#sources[@]} -gt 0 ]; then
  echo "==> compiling ${#sources[@]} Java test programs into $classes" >&2
  touch target/java/.classes-stamp   # taken before compiling: later edits stay newer
  rm -rf "$classes"
  mkdir -p "$classes"
  javac -nowarn -encoding UTF-8 --release 17 -cp "$lib/*" -d "$classes" "${sources[@]}" >&2
  mv target/java/.classes-stamp "$classes/.stamp"
fi
