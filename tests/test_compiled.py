"""The compiled build's guard (udpdht/__init__.py, README "A compiled build").

Python loads a compiled module before its source. In a checkout built with ``make compiled``,
an edited source would silently not run: ``import udpdht`` refuses instead, and says what to
do. ``UDPDHT_PURE=1`` loads the sources of the compiled modules. Each test builds a stand-in
package (the real ``__init__`` and ``errors``, a one-line ``rpc.py``, a file named as an
extension module) so that nothing is compiled here; ``make test-compiled`` runs the whole
suite on a real compiled build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

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


def test_a_source_edited_after_make_compiled_is_refused_with_what_to_do(tmp_path: Path) -> None:
    stand_in(tmp_path, checkout=True, built_after_source=False)
    done = python(tmp_path, "import udpdht")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "udpdht/rpc.py changed since it was compiled" in last
    assert "make compiled" in last and "make pure" in last and "UDPDHT_PURE=1" in last


def test_a_fresh_compiled_build_is_what_loads(tmp_path: Path) -> None:
    # (Here the stand-in is no extension, so loading it fails: proof that it, not the
    # source, is what Python takes, which is why the guard above is needed.)
    stand_in(tmp_path, checkout=True, built_after_source=True)
    assert python(tmp_path, "import udpdht").returncode == 0
    done = python(tmp_path, "import udpdht.rpc")
    assert done.returncode == 1 and "ImportError" in done.stderr


def test_udpdht_pure_loads_the_sources_of_the_compiled_modules(tmp_path: Path) -> None:
    stand_in(tmp_path, checkout=True, built_after_source=False)
    done = python(tmp_path, "import udpdht.rpc; print(udpdht.rpc.WHERE)", UDPDHT_PURE="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "source"


def test_an_installed_build_is_not_judged_by_its_files_times(tmp_path: Path) -> None:
    # Installed from a wheel, the files' times are the archive's: no checkout, no refusal.
    stand_in(tmp_path, checkout=False, built_after_source=False)
    done = python(tmp_path, "import udpdht")
    assert done.returncode == 0, done.stderr
