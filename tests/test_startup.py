"""`udpdht --help` and the client commands load only what they need (issue #11).

What each start loads is checked in fresh interpreters; how long it takes is not (that is
bench/startup.py's job). The package's public names still resolve, on first use.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ENV

import udpdht

# The interpreters below import the udpdht this test process imported.
ROOT = str(Path(udpdht.__file__).resolve().parent.parent)
CHILD_ENV = {**ENV, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, ENV.get("PYTHONPATH")) if p)}

# What a command that talks to no node must not load: the event loop, the codec, the node and
# its store (sqlite3), the kademlia front, the shell.
HEAVY = [
    "asyncio",
    "msgpack",
    "logging",
    "sqlite3",
    "prompt_toolkit",
    "shell.app",
    "udpdht.client",
    "udpdht.net",
    "udpdht.rpc",
    "udpdht.node",
    "udpdht.storage",
    "udpdht.replication",
    "udpdht.server",
    "udpdht.cli_node",
    "udpdht.metrics",
    "prometheus_client",
]
# ... and what a client command must not load either.
NODE_ONLY = [
    "sqlite3",
    "prompt_toolkit",
    "udpdht.node",
    "udpdht.storage",
    "udpdht.replication",
    "udpdht.server",
    "udpdht.maintenance",
    "udpdht.cli_node",
    "udpdht.metrics",
    "prometheus_client",
]

# Runs code in a fresh interpreter, then prints (last line of stderr) the modules it loaded
# that were not loaded when it began.
PROBE = """\
import sys
_before = set(sys.modules)
_code = 0
try:
    exec(compile({code!r}, "<probe>", "exec"))
except SystemExit as exc:
    _code = exc.code
_new = sorted(set(sys.modules) - _before)
sys.stdout.flush()
import json
print(json.dumps({{"code": _code, "modules": _new}}), file=sys.stderr)
"""


def probe(code: str) -> tuple[int, list[str], str, str]:
    """Exit status, modules newly loaded, stdout and stderr of ``code`` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(code=code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=CHILD_ENV,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    stderr, _, last = done.stderr.rstrip("\n").rpartition("\n")
    report = json.loads(last)
    return report["code"] or 0, report["modules"], done.stdout, stderr + "\n" if stderr else ""


def loaded(modules: list[str], names: list[str]) -> list[str]:
    """Those of ``names`` among ``modules``, a package counted when any of its modules is."""
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


def importtime_modules(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """``python -X importtime ARGS``: the run, and every module it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=CHILD_ENV,
        check=False,
    )
    names = set(re.findall(r"^import time:.*\| *(\S+)$", done.stderr, re.MULTILINE))
    return done, names


HELP_CASES = [
    pytest.param(["--help"], ["usage: udpdht", "COMMAND", "status", "lookup", "shell"], id="help"),
    pytest.param(["get", "--help"], ["usage: udpdht get", "--node H:P", "KEY"], id="get-help"),
    pytest.param(["put", "--help"], ["usage: udpdht put", "--ttl SECONDS"], id="put-help"),
    pytest.param(["node", "--help"], ["usage: udpdht node", "--bootstrap"], id="node-help"),
    pytest.param(["ring", "--help"], ["usage: udpdht ring", "examples:"], id="ring-help"),
    pytest.param(["keys", "--help"], ["usage: udpdht keys", "--after KEY"], id="keys-help"),
    pytest.param(["leave", "--help"], ["usage: udpdht leave", "--cookie FILE"], id="leave-help"),
    # (Each build named: "(pure Python)", "(compiled)", or the sources'.)
    pytest.param(["--version"], [f"udpdht {udpdht.__version__} ("], id="version"),
]


@pytest.mark.parametrize(("argv", "expected"), HELP_CASES)
def test_help_through_entry_point_loads_nothing_heavy(argv: list[str], expected: list[str]) -> None:
    """What the ``udpdht`` console script runs: ``udpdht.cli:main``."""
    code, modules, stdout, _ = probe(f"from udpdht.cli import main\nsys.exit(main({argv!r}))")
    assert code == 0
    for text in expected:
        assert text in stdout
    assert loaded(modules, HEAVY) == []


@pytest.mark.parametrize(("argv", "expected"), HELP_CASES)
def test_help_through_python_m_loads_nothing_heavy(argv: list[str], expected: list[str]) -> None:
    _, baseline = importtime_modules("-c", "pass")  # what this environment loads anyway
    done, modules = importtime_modules("-m", "udpdht", *argv)
    assert done.returncode == 0, done.stderr
    for text in expected:
        assert text in done.stdout
    assert "udpdht.cli" in modules  # the listing is read right
    assert loaded(sorted(modules - baseline), HEAVY) == []


def test_udpdht_alone_prints_the_help_and_loads_nothing_heavy() -> None:
    code, modules, _, stderr = probe("from udpdht.cli import main\nsys.exit(main([]))")
    assert code == 2 and stderr.startswith("usage: udpdht")
    assert loaded(modules, HEAVY) == []


@pytest.mark.parametrize("command", ["ring", "keys"])
def test_shell_like_commands_load_no_node_store_or_prompt(command: str) -> None:
    """``ring`` and ``keys`` format with udpdht/render.py, which needs no prompt_toolkit."""
    argv = [command, "--node", "127.0.0.1:9", "--timeout", "0.2"]  # nothing answers there
    code, modules, _, stderr = probe(f"from udpdht.cli import main\nsys.exit(main({argv!r}))")
    assert code == 1 and "did not answer" in stderr
    assert "udpdht.client" in modules
    assert loaded(modules, NODE_ONLY) == []


def test_kad_client_commands_load_no_node_store_or_prompt() -> None:
    """``get --node kad://`` (udpdht/cli_kad.py, udpdht/render_kad.py) runs no node either."""
    argv = ["get", "--node", "kad://127.0.0.1:9", "k", "--tries", "1"]  # nothing answers there
    code, modules, _, stderr = probe(f"from udpdht.cli import main\nsys.exit(main({argv!r}))")
    assert code == 1 and "is a kademlia node running there?" in stderr
    assert "udpdht.kad.client" in modules
    assert loaded(modules, NODE_ONLY) == []


def test_client_loads_no_node_store_or_shell() -> None:
    """The client commands' import: what talks to a node, not what runs one."""
    code, modules, _, _ = probe("from udpdht.client import Client")
    assert code == 0
    assert "udpdht.client" in modules and "asyncio" in modules
    assert loaded(modules, NODE_ONLY) == []


def test_node_loads_metrics_only_when_asked() -> None:
    """``udpdht node`` without ``--metrics`` does not load prometheus_client."""
    code, modules, _, _ = probe("import udpdht.cli_node")
    assert code == 0
    assert "udpdht.node" in modules
    assert loaded(modules, ["udpdht.metrics", "prometheus_client"]) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "--node", "nonsense"], "bad address 'nonsense': expected HOST:PORT"),
        (
            ["put", "--node", "127.0.0.1:9", "k", "v", "--ttl", "0"],
            "a TTL must be more than 0 and at most 31,622,400 s (366 days), not 0",
        ),
    ],
)
def test_argument_errors_are_one_line_in_a_fresh_interpreter(argv: list[str], message: str) -> None:
    """The address and TTL checks import what they use when they run: same answer as before."""
    code, _, stdout, stderr = probe(f"from udpdht.cli import main\nsys.exit(main({argv!r}))")
    assert code == 2 and stdout == ""
    assert message in stderr and stderr.count("\n") == 1


def test_import_udpdht_loads_no_client_node_or_server() -> None:
    code, modules, _, _ = probe("import udpdht")
    assert code == 0
    assert "udpdht.errors" in modules
    assert loaded(modules, HEAVY) == []


def test_public_names_resolve_on_first_use() -> None:
    code, modules, stdout, _ = probe(
        "import udpdht\n"
        "from udpdht import Client, KeyNotFound, Node, Server, ids\n"
        "import udpdht.client, udpdht.node, udpdht.server\n"
        "assert Client is udpdht.client.Client and Node is udpdht.node.Node\n"
        "assert Server is udpdht.server.Server and udpdht.Server is Server\n"
        "print(KeyNotFound.__name__, ids.__name__)\n"
    )
    assert code == 0
    assert stdout.split() == ["KeyNotFound", "udpdht.ids"]
    assert {"udpdht.client", "udpdht.node", "udpdht.server"} <= set(modules)


def test_all_and_dir_list_every_public_name() -> None:
    for name in udpdht.__all__:
        value = getattr(udpdht, name)
        assert value.__name__ == name
        assert sys.modules[value.__module__] is not None
    assert set(udpdht.__all__) <= set(dir(udpdht))
    assert "__version__" in dir(udpdht)
    from udpdht.errors import DhtError
    from udpdht.server import Server

    assert udpdht.Server is Server and udpdht.DhtError is DhtError


def test_unknown_name_is_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'udpdht' has no attribute 'Nope'"):
        _ = udpdht.Nope  # type: ignore[attr-defined]
    assert not hasattr(udpdht, "Nope")


def test_print_config_starts_no_node() -> None:
    """``udpdht node --print-config`` reads settings, and loads nothing that runs a node."""
    code, modules, stdout, _ = probe(
        "from udpdht.cli import main\nsys.exit(main(['node', '--print-config']))"
    )
    assert code == 0 and "port = 7000  # default" in stdout
    assert loaded(modules, NODE_ONLY) == []


def test_a_node_started_with_stderr_closed_runs() -> None:
    # A helper's trial: `udpdht node ... 2>&-` refused to start ("'NoneType' object has no
    # attribute 'isatty'": Python sets a closed stream to None). What it logs is dropped.
    proc = subprocess.Popen(
        [sys.executable, "-m", "udpdht", "node", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=lambda: os.close(2),  # (the child's fd 2 only)
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)  # (bounded)
        assert ready, "the node printed nothing in 30 s"
        line = proc.stdout.readline()  # (the node's first line, or "" if it died)
        assert re.match(r"udpdht node [0-9a-f]{40} listening on 127\.0\.0\.1:\d+", line), line
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)
