"""The project installs the same way with pip and conda, and admits the torch builds on the build machines."""

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements():
    return {Requirement(r).name: Requirement(r) for r in PYPROJECT["project"]["dependencies"]}


def test_environment_yml_installs_this_project_with_dev_extras():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert pip_sections, "environment.yml needs a pip section"
    assert any(line.replace(" ", "") in ("-e.[dev]", "--editable.[dev]") for line in pip_sections[0])


def test_environment_yml_python_is_accepted_by_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pythons = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert len(pythons) == 1, "environment.yml should pin exactly one python"
    version = pythons[0].split("=")[-1].strip()
    assert version in SpecifierSet(PYPROJECT["project"]["requires-python"])


def test_torch_ranges_admit_the_local_builds():
    reqs = _requirements()
    assert "2.14.1" in reqs["torch"].specifier
    assert "0.29.1" in reqs["torchvision"].specifier
    # never ask for newer than what lies on disk
    assert "2.15.0" not in reqs["torch"].specifier
    assert "0.30.0" not in reqs["torchvision"].specifier


def test_dev_extras_have_the_test_tools():
    dev = {Requirement(r).name for r in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    assert {"pytest", "nbval", "jupyterlab", "ruff"} <= dev
    assert "papermill" in _requirements()  # the runner needs it outside dev too


def test_package_is_found_under_shared():
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"] == ["shared"]
    assert (ROOT / "shared" / "prunebook" / "__init__.py").is_file()
