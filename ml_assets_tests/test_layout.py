"""The layout's rules hold: core has no Dagster, the Dagster layer never reaches into the app."""

import ast
from pathlib import Path

import ml_assets

PACKAGE = Path(ml_assets.__file__).resolve().parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules(folder: str) -> dict[str, set[str]]:
    return {str(p.relative_to(PACKAGE)): _imports(p) for p in (PACKAGE / folder).rglob("*.py")}


def _offending(modules: dict[str, set[str]], prefixes: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {m: sorted(i for i in names if i.startswith(prefixes)) for m, names in modules.items()}
    return {m: names for m, names in bad.items() if names}


def test_core_and_simulator_import_no_dagster_and_nothing_above_them():
    above = (
        "dagster",
        "ml_assets.defs",
        "ml_assets.app",
        "ml_assets.definitions",
        "ml_assets.lake.io_manager",
    )
    assert _offending({**_modules("core"), **_modules("simulator")}, above) == {}
    # the only lake modules core may use are plain ones: table names, the table-exists probe, files
    lake = {
        m: sorted(i for i in names if i.startswith("ml_assets.lake")) for m, names in _modules("core").items()
    }
    assert {i for names in lake.values() for i in names} <= {"ml_assets.lake.tables", "ml_assets.lake.files"}


def test_lake_tables_and_model_store_are_plain_python():
    plain = {
        m: n
        for m, n in _modules("lake").items()
        if m in ("lake/tables.py", "lake/model_store.py", "lake/files.py")
    }
    assert len(plain) == 3 and _offending(plain, ("dagster",)) == {}


def test_serving_imports_no_dagster_and_the_dagster_layer_no_http():
    # the online half shares the core with the graph but runs without Dagster; the graph runs without HTTP
    assert _offending(_modules("serving"), ("dagster", "ml_assets.defs", "ml_assets.app")) == {}
    assert _offending(_modules("defs"), ("fastapi", "uvicorn", "ml_assets.serving.app")) == {}


def test_the_dagster_layer_does_not_import_the_app():
    assert _offending(_modules("defs"), ("ml_assets.app",)) == {}
    assert _offending(_modules("lake"), ("ml_assets.app", "ml_assets.defs")) == {}


def test_definitions_only_merges_stages():
    names = _imports(PACKAGE / "definitions.py")
    assert {n for n in names if n.startswith("ml_assets")} <= {
        "ml_assets.core.events.landing",
        "ml_assets.core.settings",
        *{
            f"ml_assets.defs.{m}"
            for m in (
                "automation",
                "events",
                "features",
                "maintenance",
                "model",
                "online",
                "partitions",
                "resources",
            )
        },
    }


def _top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_engine_is_plain_python_and_ray_is_imported_only_on_its_path():
    # the Dagster layer picks the engine; the engine and its workers never need Dagster
    above = ("dagster", "ml_assets.defs", "ml_assets.app", "ml_assets.lake.io_manager")
    assert _offending(_modules("engine"), above) == {}
    # `pip install -e .` has no Ray: only the Ray engine imports it, inside the function that uses it
    users = {m for m, names in _modules(".").items() if any(n.split(".")[0] == "ray" for n in names)}
    assert users == {"engine/engines.py"}
    assert not any(n.split(".")[0] == "ray" for p in PACKAGE.rglob("*.py") for n in _top_level_imports(p))
