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
