#!/usr/bin/env bash
# Checks docker-compose.yml, deploy/ and terraform/ with what runs without a
# Docker engine or an AWS account (see scripts/check_deploy.py), plus:
#   - terraform formatting with hclfmt (HashiCorp's HCL formatter, the one
#     `terraform fmt` uses), built with Go into target/go/bin;
#   - checkov's static analysis of terraform/ (no finding may fail).
# The Compose specification's JSON schema comes from the docker-compose
# 1.29.2 wheel (compose/config/compose_spec.json). Tools are cached under
# target/deploy-venv and target/deploy.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

venv=target/deploy-venv
packages=("checkov==3.3.30" "python-hcl2==8.1.4" "jsonschema==4.26.0" "PyYAML==6.0.4")
if [ ! -x "$venv/bin/checkov" ] || ! "$venv/bin/python" -c 'import hcl2, jsonschema, yaml' 2>/dev/null; then
  echo "==> installing the deployment checkers into $venv: ${packages[*]}"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}"
fi

spec=target/deploy/compose_spec.json
if [ ! -f "$spec" ]; then
  mkdir -p target/deploy
  "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    -d target/deploy docker-compose==1.29.2
  "$venv/bin/python" - <<'PY'
import zipfile
with zipfile.ZipFile("target/deploy/docker_compose-1.29.2-py2.py3-none-any.whl") as z:
    with open("target/deploy/compose_spec.json", "wb") as out:
        out.write(z.read("compose/config/compose_spec.json"))
PY
fi

export GOPATH="$root/target/go" GOMODCACHE="$root/target/go/pkg/mod" GOCACHE="$root/target/go/cache"
export GOFLAGS="-buildvcs=false -modcacherw" GOWORK=off
if [ ! -x target/go/bin/hclfmt ]; then
  echo "==> building hclfmt"
  go install github.com/hashicorp/hcl/v2/cmd/hclfmt@v2.24.0
fi

status=0
for f in terraform/*.tf; do
  target/go/bin/hclfmt -check "$f" >/dev/null || status=1
  if ! target/go/bin/hclfmt "$f" | diff -u "$f" - >/dev/null; then
    echo "check-deploy: $f is not formatted (terraform fmt, or target/go/bin/hclfmt -w $f)" >&2
    status=1
  fi
done
"$venv/bin/python" scripts/check_deploy.py "$spec" || status=1
if ! out=$("$venv/bin/checkov" -d terraform --framework terraform --skip-download --quiet --compact 2>&1); then
  echo "$out" >&2
  echo "check-deploy: checkov found problems in terraform/" >&2
  status=1
fi
exit $status
