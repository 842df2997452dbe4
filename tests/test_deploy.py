"""The deployment files run `udpdht` commands: the Dockerfile, docker-compose.yml, the systemd
unit and its environment file, and docs/deploy.md. Each command line and each `UDPDHT_*`
setting in them must be one the real argument parser accepts, so a renamed flag breaks this test
rather than a deployment. No container runtime or systemd is needed: the files are read as text.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from udpdht.cli import build_parser
from udpdht.cli_node import LEAVE_DEADLINE
from udpdht.net import parse_addr

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
UNIT = ROOT / "docs" / "deploy" / "udpdht.service"
ENV_FILE = ROOT / "docs" / "deploy" / "udpdht.env"
DOCS = ROOT / "docs" / "deploy.md"

SUBCOMMANDS = ("node", "status", "put", "get", "delete", "lookup", "cluster", "shell")
CLIENT_COMMANDS = {"status", "put", "get", "delete", "lookup"}


def _advertise(text: str) -> object:
    """HOST[:PORT]: the port may be left out (it defaults to --port)."""
    return parse_addr(text) if re.search(r"(^\[.*\]|^[^:]*):\d+$", text) else text


def _log_format(text: str) -> str:
    if text not in ("text", "json"):
        raise ValueError(f"--log-format is text or json, not {text!r}")
    return text


# --- the parser --------------------------------------------------------------------------------


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("udpdht's parser has no subcommands")


SUBPARSERS = _subparsers()


def _option(sub: str, option: str) -> argparse.Action | None:
    return SUBPARSERS[sub]._option_string_actions.get(option)


def check_command(argv: list[str], where: str) -> argparse.Namespace:
    """Parse ``udpdht ARGV`` as the real CLI would (a client command's --node may come from
    $UDPDHT_NODE, which the files set: the parser takes it from there)."""
    assert argv and argv[0] in SUBCOMMANDS, f"{where}: not a udpdht command: {argv}"
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:  # the parser printed why on stderr
        pytest.fail(f"{where}: udpdht rejects {shlex.join(argv)}")
    layers = getattr(args, "layers", None)
    if layers is not None and not args.config:  # the defaults under the flags, as the node
        layers.resolve(args, {})
    return args


def env_command(name: str, value: str, where: str) -> list[str]:
    """The command line a setting ``UDPDHT_<NAME>=value`` stands for."""
    if name == "NODE":  # the client commands' default node
        return ["status", "--node", value]
    option = "--" + name.lower().replace("_", "-")
    action = _option("node", option)
    if action is None:
        pytest.fail(f"{where}: UDPDHT_{name} names no option of `udpdht node`")
    if action.nargs == 0:
        return ["node", option]  # a switch: set means on
    if action.nargs == "+":
        return ["node", option, *value.replace(",", " ").split()]
    return ["node", option, value]


# --- reading the files -------------------------------------------------------------------------

_COMMAND = re.compile(r"\budpdht[ \t]+(" + "|".join(SUBCOMMANDS) + r")\b(.*)")
_SETTING = re.compile(r"\bUDPDHT_([A-Z][A-Z_]*)=(\"[^\"]*\"|'[^']*'|[^\s\"'`\\]*)")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines with backslash continuations joined (in comments too), with their first number."""
    start = 0
    parts: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not parts:
            start = number
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line.lstrip("# ") if parts else line)
        yield start, " ".join(p.strip() for p in parts)
        parts = []


def _substitute(text: str, variables: dict[str, str], where: str) -> str:
    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in variables:
            return variables[name]
        assert default is not None, f"{where}: ${{{name}}} is set nowhere"
        return default

    return _VARIABLE.sub(one, text)


def commands_in(text: str, name: str, variables: dict[str, str]) -> list[tuple[str, list[str]]]:
    """Every ``udpdht SUBCOMMAND ...`` in ``text``, up to the end of its shell command."""
    found = []
    for number, line in _logical_lines(text):
        for match in _COMMAND.finditer(line):
            where = f"{name}:{number}"
            rest = match.group(2).split("`")[0]  # `udpdht node` in a comment: the end
            rest = _substitute(rest, variables, where)
            lexer = shlex.shlex(rest, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            args = []
            for token in lexer:
                if token and all(c in "|&;<>()" for c in token):
                    break  # a pipe, a redirection, the next command
                args.append(token)
            found.append((where, [match.group(1), *args]))
    return found


def settings_in(text: str, name: str) -> list[tuple[str, str, str]]:
    """Every ``UDPDHT_<NAME>=value`` in ``text`` (commented-out ones too): where, name, value.
    Not UDPDHT_COMPILE, the choice of build (setup.py), no option of a node's: its value is
    checked here."""
    found = []
    for number, line in _logical_lines(text):
        for match in _SETTING.finditer(line):
            value = match.group(2).strip("\"'")
            if match.group(1) == "COMPILE":
                assert value in ("0", "1"), f"{name}:{number}: UDPDHT_COMPILE={value}"
                continue
            found.append((f"{name}:{number}", match.group(1), value))
    return found


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for _, line in _logical_lines(DOCKERFILE.read_text()):
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerfile_instructions(keyword: str) -> list[str]:
    return [
        line[len(keyword) + 1 :].strip()
        for _, line in _logical_lines(DOCKERFILE.read_text())
        if line.startswith(keyword + " ")
    ]


def fenced_blocks(text: str, language: str) -> list[tuple[int, str]]:
    """The ```LANGUAGE blocks of a Markdown text, with the number of their first line."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```" + language:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            blocks.append((i + 2, "\n".join(lines[i + 1 : end])))
            i = end
        i += 1
    return blocks


def _seconds(text: str) -> float:
    units = {"": 1.0, "s": 1.0, "min": 60.0, "m": 60.0}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.strip())
    assert match and match.group(2) in units, f"not a duration: {text!r}"
    return float(match.group(1)) * units[match.group(2)]


# --- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_runs_a_node_the_parser_accepts() -> None:
    entry = dockerfile_instructions("ENTRYPOINT")
    assert len(entry) == 1
    argv = json.loads(entry[0])  # exec form: SIGTERM goes to the node itself
    assert argv == ["udpdht", "node"]
    env = dockerfile_env()
    node_args: list[str] = []
    for key, value in env.items():
        if key.startswith("UDPDHT_") and key != "UDPDHT_NODE":
            where = f"Dockerfile ENV {key}"
            node_args += env_command(key.removeprefix("UDPDHT_"), value, where)[1:]
    args = check_command(["node", *node_args], "Dockerfile ENTRYPOINT with its ENV")
    assert args.host == "0.0.0.0" and args.data_dir == "/data"
    assert env["UDPDHT_LOG_FORMAT"] == "json"
    check_command(["status", "--node", env["UDPDHT_NODE"]], "Dockerfile ENV UDPDHT_NODE")
    for where, argv in commands_in(DOCKERFILE.read_text(), "Dockerfile", env):
        check_command(argv, where)
    for where, name, value in settings_in(DOCKERFILE.read_text(), "Dockerfile"):
        check_command(env_command(name, value, where), where)


def test_dockerfile_builds_the_compiled_wheel_in_its_builder_only() -> None:
    # The image's nodes run the compiled build (README "A compiled build"): the builder has
    # the compiler and mypyc, the build sees UDPDHT_COMPILE (setup.py), and the build context
    # sends setup.py. (Instructions, not text: a comment that names mypy installs nothing.)
    builder, final = (
        [line for _, line in _logical_lines(stage) if not line.lstrip().startswith("#")]
        for stage in DOCKERFILE.read_text().split("\nFROM ")[1:]
    )
    arg = builder.index("ARG UDPDHT_COMPILE=1")
    wheel = next(i for i, line in enumerate(builder) if "pip wheel" in line)
    assert arg < wheel, "the ARG must come before the build that reads it"
    assert "--no-build-isolation" in builder[wheel] and re.search(r'"mypy==[\d.]+"', builder[wheel])
    assert any("apt-get install" in line and " gcc " in line for line in builder[arg:wheel])
    assert any(line.startswith("COPY ") and "setup.py" in line.split() for line in builder)
    assert not dockerignored("setup.py") and dockerignored("udpdht/rpc.cpython-311-x86_64.so")
    assert not any(re.search(r"\b(gcc|mypy|apt-get)\b", line) for line in final)


def test_dockerfile_healthcheck_asks_the_node_for_its_status() -> None:
    checks = dockerfile_instructions("HEALTHCHECK")
    assert len(checks) == 1 and " CMD " in f" {checks[0]}"
    env = dockerfile_env()
    found = commands_in(checks[0], "Dockerfile HEALTHCHECK", env)
    assert [argv[0] for _, argv in found] == ["status"]
    args = check_command(found[0][1], found[0][0])
    assert args.node == ("127.0.0.1", int(env["UDPDHT_PORT"]))  # its own port, on loopback


def test_dockerfile_image_is_small_and_unprivileged() -> None:
    bases = dockerfile_instructions("FROM")
    assert len(bases) == 2, "a builder stage and the image"
    assert all(b.split()[0] == "python:3.11-slim" for b in bases)
    final = DOCKERFILE.read_text().split("\nFROM ")[-1]
    assert "/wheels" in final and "udpdht[fast,metrics]" in final
    assert not re.search(r"apt-get|gcc|build-essential|COPY \. ", final)
    users = dockerfile_instructions("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    env = dockerfile_env()
    exposed = " ".join(dockerfile_instructions("EXPOSE")).split()
    assert f"{env['UDPDHT_PORT']}/udp" in exposed and "7000/udp" in exposed
    metrics_port = parse_addr(env["UDPDHT_METRICS"])[1]
    assert f"{metrics_port}/tcp" in exposed
    assert json.loads(dockerfile_instructions("VOLUME")[0]) == [env["UDPDHT_DATA_DIR"]]


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return re.compile(out)


def dockerignored(path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last pattern that matches
    the path or one of its folders decides, a ``!`` pattern taking it back in."""
    ignored = False
    parts = path.split("/")
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        regex = _dockerignore_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not keep
    return ignored


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    for path in (".venv/bin/python", ".git/HEAD", "data/store.sqlite3", "bench/out/run.json"):
        assert dockerignored(path), path
    for path in ("udpdht/__pycache__/cli.cpython-311.pyc", "tests/test_cli.py", "docs/store.png"):
        assert dockerignored(path), path
    copied = [c.split()[:-1] for c in dockerfile_instructions("COPY") if "--from" not in c]
    assert copied
    for sources in copied:
        for source in sources:
            assert (ROOT / source).exists(), source
            files = [ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*.py")
            for f in files:
                rel = f.relative_to(ROOT).as_posix()
                assert not dockerignored(rel), f"the build copies {rel}, .dockerignore drops it"


# --- docker-compose.yml ------------------------------------------------------------------------


def compose_services() -> dict[str, dict[str, str]]:
    """Each service's command (JSON, on one line) and the few keys the test reads."""
    services: dict[str, dict[str, str]] = {}
    section, service = "", ""
    for number, line in enumerate(COMPOSE.read_text().splitlines(), 1):
        if re.match(r"^[a-z]", line):
            section = line.split(":")[0]
        elif section == "services" and re.match(r"^  [a-z][\w-]*:\s*$", line):
            service = line.strip().rstrip(":")
            services[service] = {"line": str(number)}
        elif section == "services" and service:
            key, _, value = line.strip().partition(":")
            if key in ("command", "ipv4_address", "replicas") and value.strip():
                services[service][key] = value.split(" #")[0].strip()
    return services


def compose_value(key: str) -> str:
    values = re.findall(rf"^\s*-?\s*{key}:\s*(\S+)", COMPOSE.read_text(), re.M)
    assert len(values) == 1, f"docker-compose.yml: one {key}, not {values}"
    return str(values[0])


def test_compose_commands_are_ones_the_parser_accepts() -> None:
    services = compose_services()
    assert {"seed", "peer"} <= services.keys()
    env = dockerfile_env()  # the image's defaults: what each command adds to
    for name, service in services.items():
        argv = ["node", *json.loads(service["command"])]
        check_command(argv, f"docker-compose.yml:{service['line']} ({name})")
    text = COMPOSE.read_text()
    found = commands_in(text, "docker-compose.yml", env)
    assert {argv[0] for _, argv in found} >= {"status", "put", "get"}  # the usage comments
    for where, argv in found:
        check_command(argv, where)
    for where, name, value in settings_in(text, "docker-compose.yml"):
        check_command(env_command(name, value, where), where)


def test_compose_nodes_advertise_addresses_their_peers_reach() -> None:
    services = compose_services()
    seed, peer = services["seed"], services["peer"]
    seed_args = check_command(["node", *json.loads(seed["command"])], "seed")
    peer_args = check_command(["node", *json.loads(peer["command"])], "peer")
    subnet = ipaddress.ip_network(compose_value("subnet"))
    dynamic = ipaddress.ip_network(compose_value("ip_range"))
    seed_ip = ipaddress.ip_address(seed["ipv4_address"])
    # The seed has no one to join through: it advertises its fixed address on the network,
    # which Docker never hands to a peer.
    assert not seed_args.bootstrap
    # ... and starts the ring again at every start: after `down` and `up`, the peers it
    # remembered are gone for good, and waiting for them it refused every joiner (an
    # operator's trial). Restarted alone, the running peers take it back.
    assert seed_args.new_ring
    advertised = json.loads(seed["command"])
    assert advertised[advertised.index("--advertise") + 1] == f"{seed_ip}:7000"
    assert seed_ip in subnet and seed_ip not in dynamic and dynamic.subnet_of(subnet)  # type: ignore[arg-type]
    # A peer joins through the seed and advertises the address it routes to it from.
    assert peer_args.bootstrap == [(str(seed_ip), 7000)]
    assert "--advertise" not in json.loads(peer["command"])
    assert int(peer["replicas"]) >= 2
    assert _seconds(compose_value("stop_grace_period")) > LEAVE_DEADLINE


# --- systemd -----------------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for _, line in _logical_lines(UNIT.read_text()):
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_runs_a_node_the_parser_accepts() -> None:
    unit = unit_settings()
    (exec_start,) = unit["ExecStart"]
    variables = {"STATE_DIRECTORY": "/var/lib/udpdht"}  # what systemd sets for StateDirectory=
    program, *args = shlex.split(_substitute(exec_start, variables, "ExecStart"))
    assert Path(program).name == "udpdht" and Path(program).is_absolute()
    parsed = check_command(args, f"{UNIT.name} ExecStart")
    assert parsed.data_dir == "/var/lib/udpdht"  # the StateDirectory
    assert "${STATE_DIRECTORY}" in exec_start
    for text, name in ((UNIT.read_text(), UNIT.name), (ENV_FILE.read_text(), ENV_FILE.name)):
        for where, argv in commands_in(text, name, variables):
            check_command(argv, where)
        for where, key, value in settings_in(text, name):
            check_command(env_command(key, value, where), where)
    assert {s[1] for s in settings_in(ENV_FILE.read_text(), ENV_FILE.name)} >= {
        "ADVERTISE",
        "BOOTSTRAP",
    }


def test_systemd_unit_is_hardened_and_waits_for_the_leave() -> None:
    unit = unit_settings()
    for key, value in {
        "DynamicUser": "yes",
        "StateDirectory": "udpdht",
        "Restart": "on-failure",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "CapabilityBoundingSet": "",
        "KillSignal": "SIGTERM",
        "EnvironmentFile": "-/etc/udpdht/env",
    }.items():
        assert unit.get(key) == [value], f"{UNIT.name}: {key}={value}"
    assert "@system-service" in unit["SystemCallFilter"]
    assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert _seconds(unit["TimeoutStopSec"][0]) > LEAVE_DEADLINE


# --- docs/deploy.md ----------------------------------------------------------------------------


def test_deploy_doc_commands_are_ones_the_parser_accepts() -> None:
    text = DOCS.read_text()
    checked = 0
    for first, block in fenced_blocks(text, "sh"):
        for where, argv in commands_in(block, "deploy.md", {}):
            line = int(where.split(":")[1]) + first - 1
            check_command(argv, f"docs/deploy.md:{line}")
            checked += 1
        for where, name, value in settings_in(block, "deploy.md"):
            check_command(env_command(name, value, where), f"docs/deploy.md ({where})")
    assert checked >= 10
    (first, toml), *_ = fenced_blocks(text, "toml")
    for key, value in tomllib.loads(toml).items():
        values = value if isinstance(value, list) else [value]
        option = f"--{key}"
        assert _option("node", option) is not None, option
        check_command(["node", option, *map(str, values)], f"docs/deploy.md:{first} ({key})")
    for path in ("Dockerfile", "docker-compose.yml", "docs/deploy/udpdht.service"):
        assert path in text and (ROOT / path).exists()
    assert "docs/deploy.md" in (ROOT / "README.md").read_text()
