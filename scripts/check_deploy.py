"""Checks the deployment files without a Docker engine or an AWS account.

- docker-compose.yml against the Compose specification's JSON schema, and
  the topology Strata's docs promise: MinIO, PostgreSQL, three brokers with
  distinct node ids and racks on one metadata store and one bucket,
  Prometheus scraping every broker, Grafana provisioned with the dashboard;
- deploy/prometheus.yml and the Grafana dashboard parse, and every metric
  the dashboard plots is one Strata exports (docs/metrics.md);
- every terraform/*.tf file parses as HCL, and the variables are documented.

Usage: check_deploy.py COMPOSE_SPEC_JSON
"""

import glob
import json
import re
import sys

import hcl2
import jsonschema
import yaml

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def compose(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    with open("docker-compose.yml") as f:
        doc = yaml.safe_load(f)
    validator = jsonschema.Draft7Validator(spec)
    for error in validator.iter_errors(doc):
        path = "/".join(str(p) for p in error.absolute_path)
        failures.append(f"docker-compose.yml: {path}: {error.message}")
    services = doc.get("services", {})
    for needed in ["minio", "postgres", "prometheus", "grafana"]:
        check(needed in services, f"docker-compose.yml: no {needed} service")
    brokers = {n: s for n, s in services.items() if n.startswith("strata-")}
    check(len(brokers) == 3, f"docker-compose.yml: {len(brokers)} Strata brokers, expected 3")
    envs = [s.get("environment", {}) for s in brokers.values()]
    ids = {e.get("STRATA_NODE_ID") for e in envs}
    check(len(ids) == len(brokers) and None not in ids, "brokers need distinct STRATA_NODE_IDs")
    racks = {e.get("STRATA_RACK") for e in envs}
    check(len(racks) == len(brokers), "brokers need distinct STRATA_RACKs")
    for key in ["STRATA_METADATA", "STRATA_OBJECT_STORE", "STRATA_S3_ENDPOINT"]:
        values = {e.get(key) for e in envs}
        check(len(values) == 1 and None not in values, f"brokers must share one {key}: {values}")
    check(
        all(str(e.get("STRATA_METADATA", "")).startswith("postgres://") for e in envs),
        "brokers' metadata must be PostgreSQL",
    )
    built = [n for n, s in brokers.items() if "build" in s]
    check(len(built) == 1, f"docker-compose.yml: the image is built once, by one broker: {built}")
    images = {s.get("image") for s in brokers.values()}
    check(len(images) == 1 and None not in images, f"brokers run one image: {images}")
    for name, service in brokers.items():
        check(
            "build" in service or service.get("pull_policy") == "never",
            f"{name}: runs the image built here (pull_policy: never), never a pulled one",
        )
        health = service.get("healthcheck", {}).get("test", [])
        check(
            health[:1] == ["CMD"],
            f"{name}: the healthcheck runs a command (the image's /bin/sh is dash, no /dev/tcp)",
        )
        check("stop_grace_period" in service, f"{name}: stop_grace_period longer than a drain")
        env = {**doc["x-strata"]["environment"], **service.get("environment", {})}
        advertised = dict(
            entry.split("://", 1)
            for entry in env.get("STRATA_ADVERTISED_LISTENERS", "").split(",")
            if "://" in entry
        )
        external = advertised.get("EXTERNAL", "")
        published = [str(p).split(":")[0] for p in service.get("ports", [])]
        check(
            external.startswith("localhost:") and external.rsplit(":", 1)[-1] in published,
            f"{name}: its EXTERNAL listener ({external}) must be published on the host",
        )
        internal = advertised.get("INTERNAL", "")
        check(
            internal.startswith(f"{name}:"),
            f"{name}: its INTERNAL listener must advertise its service name, not {internal}",
        )
        check(
            env.get("STRATA_INTER_BROKER_LISTENER_NAME") == "INTERNAL",
            f"{name}: brokers must reach each other on the INTERNAL listener",
        )
    with open("deploy/prometheus.yml") as f:
        prometheus = yaml.safe_load(f)
    targets = {
        t
        for job in prometheus.get("scrape_configs", [])
        for sc in job.get("static_configs", [])
        for t in sc.get("targets", [])
    }
    for name, service in brokers.items():
        http = service.get("environment", {}).get("STRATA_HTTP_ADDR") or doc["x-strata"][
            "environment"
        ].get("STRATA_HTTP_ADDR", "")
        port = http.rsplit(":", 1)[-1]
        check(f"{name}:{port}" in targets, f"prometheus does not scrape {name}:{port}")
    return brokers


def dashboard():
    with open("docs/metrics.md") as f:
        documented = set(re.findall(r"`(strata_[a-z_]+)`", f.read()))
    for path in glob.glob("deploy/grafana/dashboards/*.json"):
        with open(path) as f:
            board = json.load(f)
        check(board.get("panels"), f"{path}: no panels")
        for panel in board.get("panels", []):
            for target in panel.get("targets", []):
                for metric in re.findall(r"strata_[a-z_]+", target.get("expr", "")):
                    base = re.sub(r"_(bucket|count|sum)$", "", metric)
                    check(
                        base in documented,
                        f"{path}: panel '{panel.get('title')}' plots {metric}, which Strata does not export",
                    )


def terraform():
    variables = {}
    for path in sorted(glob.glob("terraform/*.tf")):
        with open(path) as f:
            try:
                parsed = hcl2.load(f)
            except Exception as e:  # the parser's own error says where
                failures.append(f"{path}: does not parse: {e}")
                continue
        for block in parsed.get("variable", []):
            for name, body in block.items():
                variables[name] = body
    check(variables, "terraform: no variables")
    for name, body in variables.items():
        check(body.get("description"), f"terraform variable {name} has no description")
    with open("terraform/README.md") as f:
        readme = f.read()
    for name in variables:
        check(f"`{name}`" in readme, f"terraform/README.md does not document variable {name}")


def main():
    brokers = compose(sys.argv[1])
    dashboard()
    terraform()
    if failures:
        for failure in failures:
            print(f"check-deploy: {failure}", file=sys.stderr)
        sys.exit(1)
    print(f"check-deploy: docker-compose.yml ({len(brokers)} brokers), Grafana, Prometheus, terraform: ok")


main()
