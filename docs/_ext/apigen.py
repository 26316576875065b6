"""Writes the API reference's pages (docs/api/*.rst) from the package itself, at build start.

Every public name gets a page (autosummary stubs), documented once, at its shortest public path:
the top-level estimators as `jaxvi.GaussianMixture`, a name in a package's `__all__` at the
package (`jaxvi.kl.mvn`, not `jaxvi.kl.gaussian.mvn`), and what no package re-exports at its
module (`jaxvi.em.driver.fit_driver`). A module's public names are its `__all__`, or else the
functions and classes it defines whose names do not start with an underscore. Private modules
(`_linalg`, `estimators._base`, ...), the command line (`jaxvi.cli`, `jaxvi.commands`) and the
thin re-export modules kept for old import paths are left out. Nothing here is typed by hand,
so a new public name shows up in the next build (and `tests/test_docs_api.py` checks it).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import jaxvi

# Sections of the reference: (page, title, packages documented with their `__all__` first).
SECTIONS = [
    ("jaxvi", "jaxvi: the estimators and the compilation cache", ["jaxvi"]),
    ("kl", "jaxvi.kl: divergences", ["jaxvi.kl"]),
    ("mixture", "jaxvi.mixture: the Gaussian-mixture distribution", ["jaxvi.mixture"]),
    ("em", "jaxvi.em: EM for Gaussian mixtures", ["jaxvi.em"]),
    ("variational", "jaxvi.em.variational: variational Bayes", ["jaxvi.em.variational"]),
    ("estimators", "jaxvi.estimators: the scikit-learn estimators", ["jaxvi.estimators"]),
    ("vi", "jaxvi.vi: fitting by inclusive or exclusive KL", ["jaxvi.vi"]),
    ("training", "jaxvi.training: step, loop, checkpoints", ["jaxvi.training"]),
    ("vae", "jaxvi.vae: the hierarchical VAE", ["jaxvi.vae"]),
    ("utilities", "Data, metrics, devices and processes",
     ["jaxvi.data", "jaxvi.idx", "jaxvi.metrics", "jaxvi.distributed", "jaxvi.processes",
      "jaxvi.nn", "jaxvi.compilation_cache"]),
]
# Modules that only re-export names documented elsewhere (old import paths).
REEXPORTS = {"jaxvi.sklearn", "jaxvi.sklearn_variational", "jaxvi.em.variational_fit",
             "jaxvi.em.variational_online"}
EXCLUDED_PREFIXES = ("jaxvi.cli", "jaxvi.commands")


def _private(name: str) -> bool:
    return any(part.startswith("_") for part in name.split("."))


def public_modules() -> list[str]:
    """Every importable public module of jaxvi, packages included, in a stable order."""
    names = ["jaxvi"]
    for info in pkgutil.walk_packages(jaxvi.__path__, "jaxvi."):
        if _private(info.name) or info.name.startswith(EXCLUDED_PREFIXES):
            continue
        if info.name in REEXPORTS:
            continue
        names.append(info.name)
    return sorted(names)


def public_names(module_name: str) -> list[str]:
    """A module's public names: `__all__`, else what it defines without a leading underscore."""
    module = importlib.import_module(module_name)
    if module_name == "jaxvi":  # the lazily loaded top-level names (the submodules aside)
        return list(module._ATTRIBUTES)
    if hasattr(module, "__all__"):
        return [n for n in module.__all__
                if not inspect.ismodule(getattr(module, n))]
    return sorted(
        n for n, v in vars(module).items()
        if not n.startswith("_") and (inspect.isfunction(v) or inspect.isclass(v))
        and getattr(v, "__module__", None) == module_name)


def _section_of(module_name: str) -> str:
    best, best_len = None, -1
    for page, _, packages in SECTIONS:
        for p in packages:
            if (module_name == p or module_name.startswith(p + ".")) and len(p) > best_len:
                best, best_len = page, len(p)
    if best is None:
        raise RuntimeError(f"no API section for {module_name}; add it to docs/_ext/apigen.py")
    return best


def plan() -> dict[str, list[tuple[str, list[str]]]]:
    """page -> [(module, [names documented there])], each object once, at its shortest path."""
    modules = public_modules()
    # Packages with `__all__` first (they are the public paths), then depth, then name.
    order = sorted(modules, key=lambda m: (
        m != "jaxvi", not hasattr(importlib.import_module(m), "__all__"), m.count("."), m))
    seen: set[int] = set()
    pages: dict[str, list[tuple[str, list[str]]]] = {page: [] for page, _, _ in SECTIONS}
    for m in order:
        module = importlib.import_module(m)
        names = []
        for n in public_names(m):
            obj = getattr(module, n)
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            names.append(n)
        pages[_section_of(m)].append((m, names))
    for page in pages:  # within a page: the package first, then its modules by name
        pages[page].sort(key=lambda item: (item[0].count("."), item[0]))
    return pages


def _underline(text: str, char: str) -> str:
    return f"{text}\n{char * len(text)}\n"


def write_pages(out: Path) -> int:
    """Writes docs/api/index.rst and one page per section; returns the number of names."""
    out.mkdir(parents=True, exist_ok=True)
    pages, count = plan(), 0
    index = [_underline("API reference", "="),
             "Generated from the docstrings: every public function, class and estimator of",
             "jaxvi has a page, at its shortest public path. Shapes are given unbatched or with",
             "their batch axes, as ``x: (N, D)``.\n",
             ".. toctree::\n   :maxdepth: 2\n"]
    for page, title, _ in SECTIONS:
        index.append(f"   {page}")
        lines = [_underline(title, "="), ""]
        for module_name, names in pages[page]:
            count += len(names)
            # `jaxvi.em.fit` is a module and the function `fit` of `jaxvi.em`: index the function.
            parent, _, leaf = module_name.rpartition(".")
            shadowed = parent and not inspect.ismodule(
                getattr(importlib.import_module(parent), leaf, None))
            lines += [_underline(module_name, "-"),
                      f".. automodule:: {module_name}\n   :no-members:\n"
                      + ("   :no-index:\n" if shadowed else ""),
                      f".. currentmodule:: {module_name}\n"]
            if names:
                lines += [".. autosummary::\n   :toctree: generated\n   :nosignatures:\n"]
                lines += [f"   {n}" for n in names]
                lines.append("")
        text = "\n".join(lines) + "\n"
        path = out / f"{page}.rst"
        if not path.exists() or path.read_text() != text:  # unchanged pages stay cached
            path.write_text(text)
    # Stubs autosummary wrote in an earlier build for names documented no more (moved or
    # removed) would be pages outside every toctree: a warning, so an error with -W.
    expected = {f"{m}.{n}.rst" for page in pages.values() for m, names in page for n in names}
    for stale in (out / "generated").glob("*.rst"):
        if stale.name not in expected:
            stale.unlink()
    text = "\n".join(index) + "\n"
    path = out / "index.rst"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return count


def setup(app):
    write_pages(Path(app.srcdir) / "api")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
