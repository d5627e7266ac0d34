"""Build hook: ship the top-level configs/ inside the wheel as the package data openmix/configs.

Everything else about the project is in pyproject.toml.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["openmix", "openmix.*"]) + ["openmix.configs"],
    package_dir={"openmix.configs": "configs"},
)
