"""The compiled build's guard (udpdht/__init__.py, README "A compiled build").

Python loads a compiled module before its source. In a checkout built with ``make compiled``,
an edited source would silently not run: ``import udpdht`` then runs the sources of every
compiled module instead, and says so. ``UDPDHT_PURE=1`` runs them too. Each test builds a
stand-in package (the real ``__init__`` and ``errors``, a one-line ``rpc.py``, a file named
as an extension module) so that nothing is compiled here; ``make test-compiled`` runs the
whole suite on a real compiled build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest
from helpers import load_script

import udpdht

SOURCE = Path(udpdht.__file__).parent


def stand_in(root: Path, *, checkout: bool, built_after_source: bool) -> Path:
    package = root / "udpdht"
    package.mkdir()
    for name in ("__init__.py", "errors.py"):
        shutil.copy(SOURCE / name, package / name)
    (package / "rpc.py").write_text('WHERE = "source"\n')
    built = package / f"rpc{EXTENSION_SUFFIXES[0]}"
    built.write_bytes(b"not a real extension module")
    source_time = os.stat(package / "rpc.py").st_mtime
    stamp = source_time + 10 if built_after_source else source_time - 10
    os.utime(built, (stamp, stamp))
    if checkout:
        (root / "setup.py").write_text("")
    return package


def python(root: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("UDPDHT_PURE", "PYTHONPATH")}
    environ.update(PYTHONPATH=str(root), **env)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_source_edited_after_make_compiled_runs_and_says_so(tmp_path: Path) -> None:
    stand_in(tmp_path, checkout=True, built_after_source=False)
    done = python(tmp_path, "import udpdht.rpc; print(udpdht.BUILD, udpdht.rpc.WHERE)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["sources", "source"]
    warning = done.stderr.strip()
    assert warning.startswith("udpdht: warning: ") and "udpdht/rpc.py changed since" in warning
    assert "make compiled" in warning and "make pure" in warning
    assert len(warning.splitlines()) == 1


def test_a_fresh_compiled_build_is_what_loads(tmp_path: Path) -> None:
    # (Here the stand-in is no extension, so loading it fails: proof that it, not the
    # source, is what Python takes, which is why a stale one must not be loaded.)
    stand_in(tmp_path, checkout=True, built_after_source=True)
    done = python(tmp_path, "import udpdht; print(udpdht.BUILD)")
    assert done.returncode == 0 and done.stdout.strip() == "compiled" and not done.stderr
    done = python(tmp_path, "import udpdht.rpc")
    assert done.returncode == 1 and "ImportError" in done.stderr


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_udpdht_pure_runs_the_sources_of_the_compiled_modules(tmp_path: Path, value: str) -> None:
    stand_in(tmp_path, checkout=True, built_after_source=True)
    code = "import udpdht.rpc; print(udpdht.BUILD, udpdht.rpc.WHERE)"
    done = python(tmp_path, code, UDPDHT_PURE=value)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["sources", "source"] and not done.stderr


def test_an_udpdht_pure_value_it_does_not_know_is_taken_as_1_and_said(tmp_path: Path) -> None:
    stand_in(tmp_path, checkout=True, built_after_source=True)
    done = python(tmp_path, "import udpdht; print(udpdht.BUILD)", UDPDHT_PURE="maybe")
    assert done.returncode == 0 and done.stdout.strip() == "sources"
    assert done.stderr == (
        "udpdht: warning: UDPDHT_PURE='maybe' is not 1/0, true/false, yes/no or on/off: "
        "taken as 1\n"
    )


@pytest.mark.parametrize("value", ["", "0", "false", "no", "Off"])
def test_udpdht_pure_off_leaves_the_compiled_build(tmp_path: Path, value: str) -> None:
    stand_in(tmp_path, checkout=True, built_after_source=True)
    done = python(tmp_path, "import udpdht; print(udpdht.BUILD)", UDPDHT_PURE=value)
    assert done.returncode == 0 and done.stdout.strip() == "compiled"


def test_an_installed_build_is_not_judged_by_its_files_times(tmp_path: Path) -> None:
    # Installed from a wheel, the files' times are the archive's: no checkout, no judging.
    stand_in(tmp_path, checkout=False, built_after_source=False)
    done = python(tmp_path, "import udpdht; print(udpdht.BUILD)")
    assert done.returncode == 0 and done.stdout.strip() == "compiled" and not done.stderr


def test_make_compiled_checks_the_compiler_cc_names(monkeypatch: pytest.MonkeyPatch) -> None:
    # (setuptools builds with $CC when it is set: checked before it starts, nothing is left.)
    setup = load_script(monkeypatch, "_udpdht_setup", SOURCE.parent / "setup.py")
    monkeypatch.setenv("CC", "/nonexistent/cc -O2")
    assert setup.can_compile() == "no C compiler (/nonexistent/cc)"
