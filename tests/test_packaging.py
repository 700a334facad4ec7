"""Packaging facts a user relies on: one version string, type information, a license."""

import importlib.metadata
import re
from pathlib import Path

import mixedfit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(mixedfit.__file__).resolve().parent


def test_version_has_one_source():
    pyproject = (ROOT / "pyproject.toml").read_text()
    project = pyproject.split("[project]", 1)[1].split("\n[", 1)[0]
    # No literal version in [project]: the build reads __version__ from the package.
    assert re.search(r"^version\s*=", project, re.MULTILINE) is None
    assert re.search(r'^dynamic\s*=\s*\[[^\]]*"version"', project, re.MULTILINE)
    assert 'input = "python/mixedfit/__init__.py"' in pyproject
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)*", mixedfit.__version__)


def test_installed_metadata_matches_package_version():
    try:
        installed = importlib.metadata.version("mixedfit")
    except importlib.metadata.PackageNotFoundError:
        installed = None  # running from the source tree without an installed copy
    if installed is not None:
        assert installed == mixedfit.__version__


def test_typed_and_licensed():
    assert (PACKAGE / "py.typed").is_file()
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    assert 'license = { text = "MIT' in (ROOT / "pyproject.toml").read_text()
