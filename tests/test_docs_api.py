"""Every public name of jaxvi has a page in the API reference (docs/_ext/apigen.py's plan),
documented once; fast and without a docs build."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _apigen():
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        return importlib.import_module("apigen")
    finally:
        sys.path.remove(str(ROOT / "docs" / "_ext"))


def test_every_public_name_has_an_api_page():
    apigen = _apigen()
    plan = apigen.plan()
    documented = {}
    for items in plan.values():
        for module_name, names in items:
            module = importlib.import_module(module_name)
            for n in names:
                obj = getattr(module, n)
                assert id(obj) not in documented, f"{module_name}.{n} documented twice"
                documented[id(obj)] = f"{module_name}.{n}"
    import jaxvi

    expected = {f"jaxvi.{n}": getattr(jaxvi, n)
                for n in ("GaussianMixture", "BayesianGaussianMixture", "MixtureVAE",
                          "enable_compilation_cache", "disable_compilation_cache")}
    for package in ("jaxvi.kl", "jaxvi.em", "jaxvi.em.variational", "jaxvi.vi",
                    "jaxvi.estimators"):
        module = importlib.import_module(package)
        expected.update({f"{package}.{n}": getattr(module, n) for n in module.__all__})
    for module_name in apigen.public_modules():
        for n in apigen.public_names(module_name):
            expected[f"{module_name}.{n}"] = getattr(importlib.import_module(module_name), n)
    missing = [name for name, obj in expected.items() if id(obj) not in documented]
    assert not missing, f"public names without an API page: {missing}"


def test_the_command_line_and_private_modules_are_not_in_the_reference():
    modules = _apigen().public_modules()
    assert "jaxvi.em" in modules and "jaxvi.vae.bounds" in modules
    assert not [m for m in modules if m.startswith(("jaxvi.cli", "jaxvi.commands"))
                or any(part.startswith("_") for part in m.split("."))]
