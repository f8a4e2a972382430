"""Package discovery for setuptools (all metadata lives in pyproject.toml).

The generated code lives in the top-level folder ``generated/`` (owned by tools/regen.py) but is
installed and imported only as ``coordexp.generated``; pyproject's static ``packages.find`` cannot
express that remapping, so the package list is discovered here: every package under ``coordexp/``
and every package under ``generated/`` (renamed), never a hand-kept list that can miss a folder.
"""

from __future__ import annotations

from setuptools import find_packages, setup

GENERATED_DIR = "generated"
GENERATED_PACKAGE = "coordexp.generated"


def discover_packages() -> list[str]:
    own = find_packages(include=["coordexp", "coordexp.*"])
    generated = [GENERATED_PACKAGE] + [
        f"{GENERATED_PACKAGE}.{name}" for name in find_packages(where=GENERATED_DIR)
    ]
    return sorted(own + generated)


if __name__ == "__main__":
    setup(
        packages=discover_packages(),
        package_dir={"coordexp": "coordexp", GENERATED_PACKAGE: GENERATED_DIR},
    )
