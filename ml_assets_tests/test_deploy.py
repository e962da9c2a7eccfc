"""deploy/ holds together without a cluster: the YAML parses, the Helm values match the keys the
chart takes, and the names and versions that several files share agree (deploy/check.py; the
Kubernetes schemas and the linters run in deploy/check.sh)."""

import copy
import importlib.util
import json
from pathlib import Path

import jsonschema

CHECK = Path(__file__).resolve().parents[1] / "deploy" / "check.py"


def _check_module():
    spec = importlib.util.spec_from_file_location("deploy_check", CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_deploy_files_parse_and_agree():
    check = _check_module()
    assert len(check.yaml_files()) >= 5
    assert check.parse_errors() == []
    assert check.helm_values_errors() == []
    assert check.consistency_errors() == []
    assert check.raycluster_errors() == []


def test_helm_values_schema_refuses_a_misspelt_key_and_a_latest_tag():
    check = _check_module()
    schema = json.loads(check.VALUES_SCHEMA.read_text())
    values = check.documents(check.VALUES)[0]
    queue = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    misspelt = copy.deepcopy(values)
    misspelt["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"] = {
        "maxConcurentRuns": queue["maxConcurrentRuns"]
    }
    latest = copy.deepcopy(values)
    latest["dagster-user-deployments"]["deployments"][0]["image"]["tag"] = "latest"
    for bad in (misspelt, latest):
        assert list(jsonschema.Draft7Validator(schema).iter_errors(bad)), bad


def test_the_clusters_settings_file_loads_as_ml_assets_settings(tmp_path):
    from ml_assets.core.settings import load_settings

    check = _check_module()
    configmap = check.documents(check.DEPLOY / "k8s" / "settings.yaml")[0]
    (tmp_path / "ml_assets.toml").write_text(configmap["data"]["ml_assets.toml"])
    settings = load_settings(tmp_path)
    assert settings.on_object_store and settings.landing_uri.endswith("/ml-assets/_landing")
    assert (settings.engine.kind, settings.instance.storage) == ("ray", "postgres")
