"""Packaging glue that pyproject.toml cannot express: ship ``recipes/`` (kept at the repository
root, where users of a clone find them) inside the package as ``robustlab/recipes``."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["robustlab", "robustlab.*"]), "robustlab.recipes"],
    package_dir={"robustlab.recipes": "recipes"},
    package_data={"robustlab.recipes": ["*/*.yaml"]},
)
