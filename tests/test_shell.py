"""The interactive shell: parsing, rendering, completion, a typed session, and scripted use."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ENV
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from prompt_toolkit.output.plain_text import PlainTextOutput

from shell import render
from shell.app import (
    PlainConsole,
    ShellCompleter,
    TerminalConsole,
    history_path,
    interact,
    main,
    node_events,
    run_script,
    toolbar_text,
)
from shell.commands import COMMANDS, Command, CommandError, help_text, parse
from shell.session import Session
from udpdht import Node
from udpdht.lookup import Hop, Lookup
from udpdht.routing import Peer

# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("get foo", Command("get", key="foo")),
        ("put foo bar", Command("put", key="foo", value="bar")),
        (
            'put "my key" "a value with spaces"',
            Command("put", key="my key", value="a value with spaces"),
        ),
        ("put k 42", Command("put", key="k", value="42")),
        ("put k --json 42", Command("put", key="k", value=42)),
        (
            """put cfg --json '{"a": [1, null]}'""",
            Command("put", key="cfg", value={"a": [1, None]}),
        ),
        ("put k v --ttl 60", Command("put", key="k", value="v", ttl=60.0)),
        ("put k v --ttl=1.5", Command("put", key="k", value="v", ttl=1.5)),
        ("put k -- --json", Command("put", key="k", value="--json")),
        ("put k ''", Command("put", key="k", value="")),
        ("delete foo", Command("delete", key="foo")),
        ("del foo", Command("delete", key="foo")),
        ("lookup 'a b'", Command("lookup", key="a b")),
        ("status", Command("status")),
        ("ring", Command("ring")),
        ("ring --list", Command("ring", action="list")),
        ("leafset", Command("leafset")),
        ("fingers", Command("fingers")),
        ("stats", Command("stats")),
        ("ping", Command("ping")),
        ("ping 127.0.0.1:7001", Command("ping", addr=("127.0.0.1", 7001))),
        ("attach 10.0.0.2:7000", Command("attach", addr=("10.0.0.2", 7000))),
        ("attach [::1]:7000", Command("attach", addr=("::1", 7000))),
        ("join localhost:7000", Command("join", addr=("localhost", 7000))),
        ("leave", Command("leave")),
        ("nodes", Command("nodes", action="list")),
        ("nodes list", Command("nodes", action="list")),
        ("nodes add", Command("nodes", action="add", number=1)),
        ("nodes add 3", Command("nodes", action="add", number=3)),
        ("nodes kill 0", Command("nodes", action="kill", number=0)),
        ("help", Command("help")),
        ("help put", Command("help", topic="put")),
        ("help exit", Command("help", topic="quit")),
        ("?", Command("help")),
        ("quit", Command("quit")),
        ("exit", Command("quit")),
        ("  get   spaced  ", Command("get", key="spaced")),
    ],
)
def test_parse(line: str, expected: Command) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "empty line"),
        ("gte foo", "unknown command 'gte'; did you mean 'get'?"),
        ("sttaus", "did you mean 'status'?"),
        ("frobnicate", "unknown command 'frobnicate'; type 'help' for the list"),
        ("get", "'get' needs a KEY; usage: get KEY"),
        ("get a b", "too many arguments for 'get' (quote words that contain spaces)"),
        ("get ''", "non-empty KEY"),
        ("put k", "'put' needs a KEY and a VALUE; usage: put KEY VALUE"),
        ("put my key a value", "too many arguments for 'put'"),
        ("put k --json '{bad'", "VALUE: not valid JSON"),
        ("put k v --ttl", "--ttl needs a number of seconds"),
        ("put k v --ttl -3", "--ttl must be a positive number"),
        ("put k --force v", "unknown option '--force' for 'put'"),
        ('put k "unclosed', "cannot split the line into words: no closing quotation"),
        ("delete", "'delete' needs a KEY"),
        ("lookup", "'lookup' needs a KEY"),
        ("status now", "too many arguments for 'status'"),
        ("ring 3", "too many arguments for 'ring'"),
        ("ring --draw", "unknown option '--draw' for 'ring'"),
        ("ring --list 3", "too many arguments for 'ring'"),
        ("leave now", "too many arguments for 'leave'"),
        ("attach", "'attach' needs an address HOST:PORT"),
        ("attach nowhere", "bad address 'nowhere': expected HOST:PORT"),
        ("attach host:port", "port 'port' is not a number"),
        ("join 127.0.0.1:70000", "port must be 1..65535"),
        ("join ::1:7000", "write IPv6 addresses as [HOST]:PORT"),
        ("ping a:1 b:2", "too many arguments for 'ping'"),
        ("nodes add 0", "N must be a number 1..32, got '0'"),
        ("nodes add x", "N must be a number"),
        ("nodes kill", "'nodes' needs the number I of the node to kill"),
        ("nodes kil 1", "unknown action 'kil' for 'nodes'; did you mean 'nodes kill'?"),
        ("help nothing", "unknown command 'nothing'"),
        ("quit now", "too many arguments for 'quit'"),
    ],
)
def test_parse_errors_are_one_sentence(line: str, message: str) -> None:
    with pytest.raises(CommandError) as info:
        parse(line)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_for_each_command(name: str) -> None:
    text = help_text(name)
    assert text.startswith(f"usage: {COMMANDS[name].usage}")
    assert COMMANDS[name].summary in text
    assert name in help_text()  # and in the list


# --- rendering and completion ------------------------------------------------------------------


def test_render_values_and_durations() -> None:
    assert render.value_text("plain") == "plain"
    assert render.value_text("42") == "42"  # a string as it is; other types say theirs
    assert render.value_text(42) == "(int) 42"
    assert render.value_text({"a": [1, None]}) == '(map) {"a": [1, null]}'
    assert render.value_text(b"\xff") == "(bytes) /w=="
    assert render.duration(0.0123) == "12.3 ms"
    assert render.duration(5.2) == "5.20 s"
    assert render.uptime(3725) == "1 h 02 min"


def test_render_ring_with_a_silent_node() -> None:
    st: dict[str, Any] = {
        "id": "ab" * 20,
        "addr": "127.0.0.1:7000",
        "store": {"primary": 2, "replica": 1, "bytes": 10},
    }
    lines = render.ring_lines([st, {"addr": "127.0.0.1:7001", "error": "no answer"}], st["addr"])
    assert lines[1].startswith("*") and "abababab" in lines[1] and "127.0.0.1:7000" in lines[1]
    assert "?" in lines[2]
    assert lines[-1].startswith("1 node, 2 keys; not answering: 127.0.0.1:7001")


def test_render_lookup_trace() -> None:
    a = Peer(0xAB << 152, ("127.0.0.1", 7001))
    b = Peer(0xCD << 152, ("127.0.0.1", 7002))
    lines = render.lookup_lines("k", Lookup(b, [Hop(a, 0.0012), Hop(b, 0.0004)], [a]))
    assert lines[0].startswith("key    'k' -> 13fbd79c3d390e5d")
    assert lines[1] == "owner  cd000000@127.0.0.1:7002"
    assert lines[2] == "  hop 1  ab000000@127.0.0.1:7001     1.2 ms"
    assert lines[3] == "  hop 2  cd000000@127.0.0.1:7002     0.4 ms"
    assert lines[4] == "2 hops, 1.6 ms of round trips"
    assert lines[5] == "next   ab000000@127.0.0.1:7001"


def _completions(session: Session, text: str) -> list[str]:
    completer = ShellCompleter(session)
    found = completer.get_completions(Document(text), CompleteEvent(completion_requested=True))
    return [c.text for c in found]


def test_completion() -> None:
    session = Session()
    session.remember_key("alpha")
    session.remember_key("my key")
    session.remember_addr("127.0.0.1:7001")
    assert _completions(session, "ge") == ["get "]  # a space: the key comes next
    assert _completions(session, "qu") == ["quit"]  # nothing follows quit
    assert {c.strip() for c in _completions(session, "")} == set(COMMANDS)
    assert _completions(session, "get al") == ["alpha"]
    assert _completions(session, "get m") == ["'my key'"]
    assert _completions(session, "delete 'my") == ["'my key'"]
    assert _completions(session, "ping 127") == ["127.0.0.1:7001"]
    assert _completions(session, "nodes k") == ["kill "]
    assert _completions(session, "nodes l") == ["list"]
    assert _completions(session, "help lo") == ["lookup"]
    assert _completions(session, "get alpha ") == []


def test_history_under_xdg_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert history_path() == tmp_path / "udpdht" / "shell_history"


# --- against an embedded ring ------------------------------------------------------------------


@pytest.fixture
async def embedded() -> AsyncIterator[Session]:
    session = Session()
    await session.start_embedded(5)
    try:
        yield session
    finally:
        await session.close()
        assert session.embedded is not None
        assert all(not e.node.running for e in session.embedded)


async def test_typed_session(embedded: Session) -> None:
    """A person types at the prompt (through prompt_toolkit's pipe input)."""
    session = embedded
    first = session.attached_text
    lines = [
        "put greeting 'hello world'",
        "get greeting",
        "gte greeting",
        "get missing",
        "status",
        "lookup greeting",
        "ring",
        "",
        "# a comment",
        "leave",
        "ring",
        "get greeting",
        "quit",
        "get greeting",  # never runs
    ]
    buf = io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text("".join(line + "\r" for line in lines))
        code = await interact(
            session,
            TerminalConsole(PlainTextOutput(buf)),
            input=pipe,
            output=DummyOutput(),
            banner=["welcome"],
        )
    out = buf.getvalue().replace("\r\n", "\n")
    assert code == 0
    assert out.startswith("welcome\n")
    assert "stored 'greeting'\n" in out
    assert out.count("hello world\n") == 2
    assert "unknown command 'gte'; did you mean 'get'?" in out
    assert "'missing': not found" in out
    assert "ms)\n" in out  # every command says how long it took
    assert f"address      {first}" in out
    assert "owner  " in out and "key    'greeting' -> " in out
    assert "5 nodes, 1 key" in out
    assert "5 nodes shown, 1 key" in out  # the picture above the listing
    assert "@ attached node " in out and "id 0 at the top" in out
    assert f"{first} left the ring; its keys went to its successors; now attached to " in out
    assert "left the ring\n" in out  # the node's own log record, shown as an event
    assert "4 nodes, 1 key" in out
    assert session.attached_text != first
    assert "Traceback" not in out
    assert session.attached_text in "".join(text for _, text, *_ in toolbar_text(session))


async def test_embedded_nodes_add_and_kill(embedded: Session) -> None:
    session = embedded
    first = session.attached_text
    out = await session.execute(parse("nodes add 2"))
    assert "node #5 at 127.0.0.1:" in out and "node #6 at" in out
    assert "the ring has 7 nodes" in out
    await session.execute(parse("put k v"))
    out = await session.execute(parse("nodes kill 0"))  # the attached node
    assert out.startswith(f"killed node #0 at {first}")
    assert "now attached to 127.0.0.1:" in out and session.attached_text != first
    assert await session.execute(parse("get k")) == "v"
    listing = await session.execute(parse("nodes list"))
    assert "killed" in listing and "6 of 7 embedded nodes up" in listing
    with pytest.raises(CommandError, match="already killed"):
        await session.execute(parse("nodes kill 0"))
    with pytest.raises(CommandError, match="no embedded node #9"):
        await session.execute(parse("nodes kill 9"))
    out = await session.execute(parse("ping"))
    assert out.startswith(f"{session.attached_text} (id ") and "answered in" in out
    assert session.last_rtt is not None
    assert "fingers" in await session.execute(parse("fingers"))  # maybe none yet
    assert "successors (" in await session.execute(parse("leafset"))
    assert "timeouts" in await session.execute(parse("stats"))


async def test_scripted_run_reports_failures(embedded: Session) -> None:
    script = io.StringIO(
        "put a 1\n\n# comment\nget a\nget b\nbogus\ndelete a\ndelete a\nquit\nget a\n"
    )
    out, err = io.StringIO(), io.StringIO()
    code = await run_script(embedded, script.readline, PlainConsole(out, err))
    assert code == 1
    assert out.getvalue() == "stored 'a'\n1\ndeleted 'a'\n"
    assert err.getvalue().splitlines() == [
        "line 5: 'b': not found",
        "line 6: unknown command 'bogus'; type 'help' for the list",
        "line 8: 'a': not found (nothing to delete)",  # the CLI's words
    ]


async def test_attached_without_cookie(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # no cookie file to find
    async with Node("127.0.0.1", 0) as node:
        session = Session()
        try:
            st = await session.attach(node.addr)
            assert st["addr"] == session.attached_text
            with pytest.raises(CommandError, match="leave needs the node's cookie"):
                await session.execute(parse("leave"))
            with pytest.raises(CommandError, match="only in the embedded ring"):
                await session.execute(parse("nodes list"))
            assert "none: this node is alone" in await session.execute(parse("leafset"))
        finally:
            await session.close()


async def test_join_with_the_cookie(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    async with Node("127.0.0.1", 0) as a, Node("127.0.0.1", 0) as b:
        session = Session(cookie=a.cookie, cookie_addr=a.addr)
        try:
            out = await session.execute(parse(f"attach 127.0.0.1:{a.addr[1]}"))
            assert out.startswith(f"attached to 127.0.0.1:{a.addr[1]} (id ")
            out = await session.execute(parse(f"join 127.0.0.1:{b.addr[1]}"))
            assert out == (
                f"127.0.0.1:{a.addr[1]} joined the ring of 127.0.0.1:{b.addr[1]}; "
                f"its successor is {b.peer}"
            )
            assert f"127.0.0.1:{b.addr[1]}" in session.addrs  # offered for completion
        finally:
            await session.close()


async def test_events_are_printed() -> None:
    buf = io.StringIO()
    with node_events(TerminalConsole(PlainTextOutput(buf)), logging.INFO):
        logging.getLogger("udpdht.node").info(
            "peer %s failed; removed", "x", extra={"node": "ab12"}
        )
        logging.getLogger("udpdht.node").debug("not shown")
    assert buf.getvalue().endswith("] node ab12: peer x failed; removed\r\n")
    assert "not shown" not in buf.getvalue()
    quiet = io.StringIO()
    with node_events(TerminalConsole(PlainTextOutput(quiet)), logging.INFO, lambda: True):
        logging.getLogger("udpdht.node").info("routine, muted")
        logging.getLogger("udpdht.node").warning("still shown")
    assert "routine" not in quiet.getvalue() and "still shown" in quiet.getvalue()


async def test_bad_cookie_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert await main(None, "/nonexistent/cookie", tty=False) == 2
    assert "cannot read cookie file /nonexistent/cookie" in capsys.readouterr().err


def test_scripted_shell_command(tmp_path: Path) -> None:
    """`udpdht shell < commands` as a user scripts it."""
    env = {**ENV, "XDG_DATA_HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "udpdht", "shell"],
        input='put a 1\nget a\nput "my key" --json "[1, 2]"\nget "my key"\nring\nquit\n',
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == ["stored 'a'", "1", "stored 'my key'", "(list) [1, 2]"]
    assert lines[-1] == "5 nodes, 2 keys   (* attached)"
    assert "\x1b[" not in result.stdout  # plain text: no colours
    assert result.stderr == ""
