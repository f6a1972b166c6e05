"""The built wheel carries the grammar, SQL reports and example rules, and finds them.

A source checkout finds these files at the top of the repository; an installed
wheel must find them inside the package. This builds a real wheel and imports
the package from it in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (path,) = out.glob("policyengine-*.whl")
    return path


def test_wheel_contains_the_data_folders(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "policyengine/_data/grammar/policy.lark" in names
    assert any(n.startswith("policyengine/_data/reports/") and n.endswith(".sql") for n in names)
    assert any(n.startswith("policyengine/_data/rules/") and n.endswith(".policy") for n in names)
    assert any(n.startswith("policyengine/_data/data/") for n in names), "the demo's sample data is missing"


def test_installed_package_resolves_data_inside_itself(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import policyengine.resources as r, pathlib; "
        "p = r.data_path('grammar'); "
        "assert '_data' in p.parts, p; "
        "assert (p / 'policy.lark').is_file(); "
        "assert all('_data' in r.data_path(n).parts for n in ('reports', 'rules', 'data')); print(p)"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(site) in result.stdout


def _declared_distributions() -> set[str]:
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~\[ ;]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}


# import name -> distribution name, where they differ
_DISTRIBUTION = {"yaml": "pyyaml", "prometheus_client": "prometheus-client", "opentelemetry": "opentelemetry-sdk",
                 "profanity_check": "alt-profanity-check"}
# imports that only run inside their own host program
_HOSTED = {"pytest": "policyengine/testing/pytest_plugin.py"}  # loaded by pytest itself
# imports of an optional extra, each from its one module (which says which extra to install when missing)
_EXTRAS = {"psycopg": ("postgres", "policyengine/store/postgres.py"),
           "redis": ("redis", "policyengine/store/ratelimit.py"),
           "opentelemetry": ("otel", "policyengine/server/run.py"),
           "profanity_check": ("guards", "policyengine/gateway/toxicity.py")}


def test_every_third_party_import_is_a_declared_dependency():
    """An installed wheel pulls in only [project].dependencies: the package may import nothing else."""
    import ast
    import sys

    imported: dict[str, str] = {}
    for path in (ROOT / "policyengine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if _HOSTED.get(top) == str(path.relative_to(ROOT)):
                    continue
                if top in _EXTRAS and _EXTRAS[top][1] == str(path.relative_to(ROOT)):
                    continue
                if top not in sys.stdlib_module_names and top != "policyengine":
                    imported.setdefault(top, str(path.relative_to(ROOT)))
    declared = _declared_distributions()
    missing = {top: where for top, where in imported.items() if _DISTRIBUTION.get(top, top) not in declared}
    assert not missing, f"imported but not in [project].dependencies: {missing}"
    import re
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for top, (extra, _) in _EXTRAS.items():
        names = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in extras[extra]}
        assert _DISTRIBUTION.get(top, top) in names, (top, extra)
