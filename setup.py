"""The compiled build (README "A compiled build"): with ``UDPDHT_COMPILE=1`` in the environment,
the modules every datagram passes through are compiled to C extensions by mypyc, the compiler
that ships with mypy; without it, this adds nothing and the package is the pure Python that
pyproject.toml describes (the default: what ``pip install`` and ``make`` give).

``make compiled`` builds them in place (``setup.py build_ext --inplace``), beside their
sources, where every command of the checkout then finds them; ``make pure`` removes them.
Compiled, what a call costs its caller beyond a bare echo's falls from about 4 µs to about
1 (bench/rpc.py), with the same code and the same tests (``make test-compiled``).
"""

from __future__ import annotations

import os

from setuptools import setup

#: What is compiled: the RPC layer and its codec, the ring's tables and lookups, the rate
#: limits. Each is typed for ``mypy --strict``, and no test replaces its functions or methods,
#: which compiled code would not see. Not compiled: the node, its store and maintenance (tests
#: replace methods of a node's replicator and maintenance, and mypyc compiles no async
#: generator), nor the Server API (an async generator). Compiling the node, the replicator and
#: maintenance too, in a trial, left a Server's get within the noise (docs/measured.md).
COMPILED = [
    "udpdht/ids.py",
    "udpdht/lookup.py",
    "udpdht/membership.py",
    "udpdht/ratelimit.py",
    "udpdht/routing.py",
    "udpdht/rpc.py",
    "udpdht/wire.py",
]

#: The compiled modules' shared library: udpdht/compiled__mypyc.*.so, inside the package.
GROUP = "udpdht.compiled"


def can_compile() -> str | None:
    """Why C extensions cannot be built here, if they cannot: what the build would fail on
    with a compiler's command line or a missing file."""
    import shlex
    import shutil
    import sysconfig

    # ($CC first: setuptools builds with it when it is set.)
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    if not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        return "no Python headers (Python.h)"
    return None


#: What UDPDHT_COMPILE takes for "no" (as UDPDHT_PURE does for its own): a pure build.
OFF = ("", "0", "false", "no", "off")


def ext_modules() -> list[object]:
    if os.environ.get("UDPDHT_COMPILE", "0").strip().lower() in OFF:
        return []
    missing = can_compile()
    if missing is not None:
        raise SystemExit(
            f"the compiled build needs a C compiler and Python's headers: {missing} here "
            "(Debian: apt install gcc python3-dev). Without UDPDHT_COMPILE (or with "
            "UDPDHT_COMPILE=0) the install is pure Python and needs neither."
        )
    try:
        from mypyc.build import mypycify  # (mypy: the test extra, `make compiled` installs it)
    except ImportError:
        raise SystemExit(
            "the compiled build needs mypy (its mypyc) where it builds, and no build isolation: "
            "pip install 'setuptools>=77' wheel mypy, then UDPDHT_COMPILE=1 pip install "
            "--no-build-isolation . (docs/deploy.md)"
        ) from None

    return list(mypycify(COMPILED, opt_level="3", group_name=GROUP))


if __name__ == "__main__":  # (as setuptools and pip run it; `make compiled` imports it)
    setup(ext_modules=ext_modules())
