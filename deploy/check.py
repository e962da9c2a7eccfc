"""Check deploy/ without a cluster: the files parse, the Helm values match the keys the chart takes,
the Kubernetes parts match Kubernetes' schemas, and the names that must agree across files do.

    python deploy/check.py            # everything (needs jsonschema, PyYAML and kubernetes-validate)
    python deploy/check.py --no-k8s   # without kubernetes-validate (what the test suite runs)

Prints one line per problem and exits 1 if there is any. deploy/check.sh runs it after hadolint,
yamllint and kubernetes-validate; docs/deploy.md says what none of this can show.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
VALUES = DEPLOY / "helm" / "values.yaml"
VALUES_SCHEMA = DEPLOY / "helm" / "values.schema.json"
RAYCLUSTER = DEPLOY / "kuberay" / "raycluster.yaml"
SERVE = DEPLOY / "k8s" / "serve.yaml"
SETTINGS = DEPLOY / "k8s" / "settings.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
KUBERNETES_VERSION = "1.30.0"  # the oldest Kubernetes the manifests are meant for


def yaml_files() -> list[Path]:
    """Every YAML file under deploy/, sorted."""
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"} or p.name == ".yamllint")


def documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of one file, empty ones dropped."""
    with path.open() as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def parse_errors() -> list[str]:
    errors = []
    for path in yaml_files():
        try:
            documents(path)
        except yaml.YAMLError as exc:
            errors.append(f"{path.relative_to(ROOT)}: not valid YAML: {exc}")
    return errors


def helm_values_errors() -> list[str]:
    """deploy/helm/values.yaml against deploy/helm/values.schema.json (JSON Schema draft 7)."""
    schema = json.loads(VALUES_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    values = documents(VALUES)[0]
    return [
        f"{VALUES.relative_to(ROOT)}: {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in sorted(jsonschema.Draft7Validator(schema).iter_errors(values), key=str)
    ]


def _by_kind(path: Path, kind: str) -> dict[str, Any]:
    return next(doc for doc in documents(path) if doc.get("kind") == kind)


def _dockerfile_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    if match is None:
        raise ValueError(f"{DOCKERFILE.relative_to(ROOT)}: no `ARG {name}=...`")
    return match.group(1)


def _repository(image: str) -> str:
    return image.rsplit(":", 1)[0]


def consistency_errors() -> list[str]:
    """Names and versions that several files must agree on."""
    errors = []
    values = documents(VALUES)[0]
    code_location = values["dagster-user-deployments"]["deployments"][0]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    module = pyproject["tool"]["dagster"]["module_name"]
    if code_location["dagsterApiGrpcArgs"] != ["-m", module]:
        errors.append(f"helm values: dagsterApiGrpcArgs should be ['-m', '{module}'] ([tool.dagster])")
    if f'"-p", "{code_location["port"]}", "-m", "{module}"' not in DOCKERFILE.read_text():
        errors.append(f"Dockerfile CMD should serve {module} on the values' port {code_location['port']}")

    ray_version = _dockerfile_arg("RAY_VERSION")
    cluster = _by_kind(RAYCLUSTER, "RayCluster")
    if cluster["spec"]["rayVersion"] != ray_version:
        errors.append(
            f"raycluster.yaml rayVersion {cluster['spec']['rayVersion']} != RAY_VERSION {ray_version}"
        )

    serve = _by_kind(SERVE, "Deployment")
    serve_image = serve["spec"]["template"]["spec"]["containers"][0]["image"]
    if _repository(serve_image) != code_location["image"]["repository"]:
        errors.append(f"serve.yaml image {serve_image} is not the code location's image")

    settings_map = _by_kind(SETTINGS, "ConfigMap")
    settings = tomllib.loads(settings_map["data"]["ml_assets.toml"])
    meta = cluster["metadata"]
    head = f"{meta['name']}-head-svc.{meta['namespace']}.svc.cluster.local:10001"
    if settings.get("engine", {}).get("address") != f"ray://{head}":
        errors.append(f"settings.yaml [engine] address should be ray://{head} (KubeRay's head service)")
    mounts = {m["name"]: m["mountPath"] for m in code_location["volumeMounts"]}
    env = {e["name"]: e["value"] for e in code_location["env"]}
    config_dir = str(Path(env["ML_ASSETS_CONFIG"]).parent)
    if mounts.get("settings") != config_dir:
        errors.append(f"helm values: ML_ASSETS_CONFIG is outside the settings mount {mounts.get('settings')}")
    configmaps = {v["name"]: v["configMap"]["name"] for v in code_location["volumes"] if "configMap" in v}
    if configmaps.get("settings") != settings_map["metadata"]["name"]:
        errors.append(f"helm values: the settings volume is not ConfigMap {settings_map['metadata']['name']}")
    return errors


def _pod(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def kubernetes_objects() -> list[tuple[str, dict[str, Any]]]:
    """Every object to check against Kubernetes' own schemas, with where it comes from.

    The manifests as they are; the code location's Deployment as the chart would make its pod from
    our values (our parts of it: env, mounts, volumes, security contexts); a run pod's container
    from the run launcher's values; and the RayCluster's pod templates as PodTemplates (Kubernetes
    has no schema for the RayCluster itself, a KubeRay custom resource).
    """
    objects: list[tuple[str, dict[str, Any]]] = []
    for path in (SERVE, SETTINGS):
        objects += [(f"{path.relative_to(ROOT)} {doc['kind']}", doc) for doc in documents(path)]

    values = documents(VALUES)[0]
    for dep in values["dagster-user-deployments"]["deployments"]:
        image = f"{dep['image']['repository']}:{dep['image']['tag']}"
        container = {
            "name": "dagster-user-deployments",
            "image": image,
            "imagePullPolicy": dep["image"]["pullPolicy"],
            "args": ["dagster", "api", "grpc", "-p", str(dep["port"]), *dep["dagsterApiGrpcArgs"]],
            "env": dep.get("env", []),
            "envFrom": [{"secretRef": ref} for ref in dep.get("envSecrets", [])],
            "volumeMounts": dep.get("volumeMounts", []),
            "securityContext": dep.get("securityContext", {}),
            "resources": dep.get("resources", {}),
        }
        spec = {
            "containers": [container],
            "securityContext": dep.get("podSecurityContext", {}),
            "volumes": dep.get("volumes", []),
        }
        objects.append((f"helm values: user deployment {dep['name']} as a pod", _pod(dep["name"], spec)))

    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_container = {
        "name": "dagster",
        "image": "run:image",
        "resources": launcher.get("resources") or {},
        "securityContext": launcher.get("securityContext") or {},
    }
    objects.append(("helm values: a run pod's container", _pod("run", {"containers": [run_container]})))

    cluster = _by_kind(RAYCLUSTER, "RayCluster")
    groups = [("head", cluster["spec"]["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in cluster["spec"]["workerGroupSpecs"]]
    for group, spec in groups:
        template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"ray-{group}"}}
        template["template"] = spec["template"]
        objects.append((f"{RAYCLUSTER.relative_to(ROOT)} group {group}'s pod template", template))
    return objects


def raycluster_errors() -> list[str]:
    """The RayCluster's own fields that KubeRay needs (no CRD schema is available here)."""
    errors = []
    cluster = _by_kind(RAYCLUSTER, "RayCluster")
    if cluster.get("apiVersion") != "ray.io/v1":
        errors.append("raycluster.yaml: apiVersion should be ray.io/v1")
    spec = cluster["spec"]
    if not isinstance(spec["headGroupSpec"].get("rayStartParams"), dict):
        errors.append("raycluster.yaml: headGroupSpec.rayStartParams should be a map")
    for group in spec["workerGroupSpecs"]:
        low, n, high = group.get("minReplicas", 0), group.get("replicas", 0), group.get("maxReplicas", 0)
        if not low <= n <= high:
            errors.append(
                f"raycluster.yaml {group['groupName']}: needs minReplicas <= replicas <= maxReplicas"
            )
        params = group.get("rayStartParams", {})
        if not all(isinstance(v, str) for v in params.values()):
            errors.append(f"raycluster.yaml {group['groupName']}: rayStartParams values must be strings")
    return errors


def kubernetes_errors() -> list[str]:
    import kubernetes_validate  # the check script's venv has it; the test suite does not need it

    errors = []
    for where, obj in kubernetes_objects():
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(map(str, exc.path))
            errors.append(f"{where}: {path}: {exc.message}")
    return errors


def main(argv: list[str]) -> int:
    checks = [parse_errors, helm_values_errors, consistency_errors, raycluster_errors]
    if "--no-k8s" not in argv:
        checks.append(kubernetes_errors)
    problems = [line for check in checks for line in check()]
    for line in problems:
        print(line)
    names = ", ".join(c.__name__.removesuffix("_errors") for c in checks)
    print(f"deploy/check.py: {len(problems)} problem(s) ({names})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
