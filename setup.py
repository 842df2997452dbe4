"""The compiled build (README "A compiled build"): with ``UDPDHT_COMPILE=1`` in the environment,
the modules every datagram passes through are compiled to C extensions by mypyc, the compiler
that ships with mypy; without it, this adds nothing and the package is the pure Python that
pyproject.toml describes (the default: what ``pip install`` and ``make`` give).

``make compiled`` builds them in place (``setup.py build_ext --inplace``), beside their
sources, where every command of the checkout then finds them; ``make pure`` removes them.
Compiled, RpcEndpoint's work per call is about a third of what the interpreter does for it
(bench/rpc.py), with the same code and the same tests (``make test-compiled``).
"""

from __future__ import annotations

import os

from setuptools import setup

#: What is compiled: the RPC layer and its codec, and the ring's tables and lookups. Each is
#: typed for ``mypy --strict`` and nothing patches its functions at run time, which a compiled
#: module would not see. (The store, maintenance and the Server API use async generators, or
#: class constants that tests change, which mypyc does not compile as they are.)
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


def ext_modules() -> list[object]:
    if os.environ.get("UDPDHT_COMPILE", "0") in ("", "0"):
        return []
    from mypyc.build import mypycify  # (mypy: the test extra, `make compiled` installs it)

    return list(mypycify(COMPILED, opt_level="3", group_name=GROUP))


setup(ext_modules=ext_modules())
