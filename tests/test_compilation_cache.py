"""jaxvi.enable_compilation_cache: opt-in (importing jaxvi sets nothing), and a second fresh
process's first fit loads its program from the cache folder the first process filled."""

import json
import os
import subprocess
import sys

import pytest
from jax_subprocess import ROOT

from jaxvi import _cpu_threads, compilation_cache

_SCRIPT = """
import json, sys
import jax, numpy as np
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
import jaxvi
from jaxvi.sklearn import GaussianMixture
unset = jax.config.jax_compilation_cache_dir is None
folder = jaxvi.enable_compilation_cache(sys.argv[1])
x = np.random.default_rng(0).normal(size=(150, 3))
GaussianMixture(3, random_state=0).fit(x)
import subprocess
ask = ("import jax; c = jax.config; "
       "print(c.jax_compilation_cache_dir, c.jax_enable_compilation_cache)")
child = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True)
jaxvi.disable_compilation_cache()
after = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True)
print("RESULT " + json.dumps(dict(child=child.stdout.split(), after=after.stdout.split(),
    unset_at_import=unset, folder=str(folder),
    hits=events.count("/jax/compilation_cache/cache_hits"),
    misses=events.count("/jax/compilation_cache/cache_misses"))))
"""


def _run(folder) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(folder)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_second_process_loads_the_fit_from_the_cache(tmp_path):
    folder = tmp_path / "xla"
    first = _run(folder)
    assert first["unset_at_import"] and first["folder"] == str(folder)
    # A process started after the call (GridSearchCV's n_jobs workers) uses the same cache,
    # and none started after disable_compilation_cache.
    assert first["child"] == [str(folder), "True"] and first["after"][1] == "False"
    assert first["hits"] == 0 and first["misses"] > 0
    entries = set(os.listdir(folder))
    assert entries  # the fit's programs were written
    second = _run(folder)
    assert second["hits"] >= 1  # the fit's program came from the folder
    assert second["misses"] < first["misses"]


def test_helper_checks_its_arguments(tmp_path):
    import jaxvi
    from jaxvi import compilation_cache

    assert "jaxvi" in sys.modules and jaxvi.enable_compilation_cache is (
        compilation_cache.enable_compilation_cache)
    with pytest.raises(ValueError, match="min_compile_time_secs"):
        compilation_cache.enable_compilation_cache(tmp_path, min_compile_time_secs=-1)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="`path` must be a folder"):
        compilation_cache.enable_compilation_cache(tmp_path / "file")
    assert str(compilation_cache.default_cache_dir()).endswith(os.path.join("jaxvi", "xla"))


# ----------------------------------------------------------------- the default of `import jaxvi`
_DEFAULT_SCRIPT = """
import json, os, sys
events = []
if sys.argv[1] in ("jax-first", "jax-off-first"):
    import jax
    if sys.argv[1] == "jax-off-first":
        jax.config.update("jax_enable_compilation_cache", False)
import jaxvi
import jax, numpy as np
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
if sys.argv[2] == "fit":
    jaxvi.GaussianMixture(2, random_state=0).fit(np.random.default_rng(0).normal(size=(60, 2)))
print("RESULT " + json.dumps(dict(dir=jax.config.jax_compilation_cache_dir,
    hits=events.count("/jax/compilation_cache/cache_hits"),
    misses=events.count("/jax/compilation_cache/cache_misses"),
    env=os.environ.get("JAX_COMPILATION_CACHE_DIR"))))
"""


def _run_default(tmp_path, *args, **env_extra) -> dict:
    """_DEFAULT_SCRIPT in a fresh process (`_run_script`)."""
    return _run_script(tmp_path, _DEFAULT_SCRIPT, *args, **env_extra)


def _run_script(tmp_path, script: str, *args, **env_extra) -> dict:
    """`script` in a fresh process with XDG_CACHE_HOME = tmp_path/"cache" and none of the
    cache variables of this suite's environment (conftest's opt-out included)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE",
                                "JAX_ENABLE_COMPILATION_CACHE", "JAXVI_COMPILATION_CACHE"))}
    env.update({"PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
                "XDG_CACHE_HOME": str(tmp_path / "cache"), **env_extra})
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


_QUIET_JAXLIB = (_cpu_threads.version_tuple(_cpu_threads.jaxlib_version() or "")
                 >= compilation_cache.QUIET_LOADS_FROM)


def test_import_turns_the_cache_on_in_the_user_cache_folder(tmp_path):
    folder = tmp_path / "cache" / "jaxvi" / "xla"
    first = _run_default(tmp_path, "jaxvi-first", "fit")
    if not _QUIET_JAXLIB:  # jaxlib 0.9: off by default (its false SIGILL errors on loads)
        assert first["dir"] is None and first["env"] is None and not folder.exists()
        return
    assert first["dir"] == str(folder) and first["env"] == str(folder)
    assert first["hits"] == 0 and first["misses"] > 0 and os.listdir(folder)
    second = _run_default(tmp_path, "jaxvi-first", "fit")
    assert second["hits"] >= 1 and second["misses"] < first["misses"]
    # JAX imported before jaxvi has read its environment: the default goes to its config.
    jax_first = _run_default(tmp_path, "jax-first", "fit")
    assert jax_first["dir"] == str(folder) and jax_first["hits"] >= 1


def test_default_cache_opt_out_and_the_users_own_settings(tmp_path):
    for off in ("0", "off", "False"):
        out = _run_default(tmp_path, "jaxvi-first", "none", JAXVI_COMPILATION_CACHE=off)
        assert out["dir"] is None and out["env"] is None
    assert not (tmp_path / "cache").exists()  # nothing written when off
    mine = tmp_path / "mine"
    out = _run_default(tmp_path, "jaxvi-first", "none", JAX_COMPILATION_CACHE_DIR=str(mine))
    assert out["dir"] == str(mine)
    out = _run_default(tmp_path, "jaxvi-first", "none", JAX_ENABLE_COMPILATION_CACHE="false")
    assert out["dir"] is None
    assert _run_default(tmp_path, "jax-off-first", "none")["dir"] is None  # off in the config
    (tmp_path / "file").write_text("")  # a cache home that cannot hold a folder: left off
    out = _run_default(tmp_path, "jaxvi-first", "fit", XDG_CACHE_HOME=str(tmp_path / "file"))
    assert out["dir"] is None and out["misses"] == 0


_VERSION_SCRIPT = """
import json, os, sys
os.environ["JAXVI_COMPILATION_CACHE"] = "0"  # import without the default, then apply it
from jaxvi import _cpu_threads, compilation_cache
del os.environ["JAXVI_COMPILATION_CACHE"]
_cpu_threads.jaxlib_version = lambda: sys.argv[1]
folder = compilation_cache.apply_default()
print("RESULT " + json.dumps(dict(folder=folder and str(folder),
                                  env=os.environ.get("JAX_COMPILATION_CACHE_DIR"))))
"""


@pytest.mark.parametrize("version,on", [("0.9.2", False), ("0.10.2", True), ("0.11.0", True),
                                        ("unknown", False)])
def test_default_waits_for_a_jaxlib_that_loads_quietly(tmp_path, version, on):
    out = _run_script(tmp_path, _VERSION_SCRIPT, version)
    folder = str(tmp_path / "cache" / "jaxvi" / "xla")
    assert out == ({"folder": folder, "env": folder} if on else {"folder": None, "env": None})
