"""The shell's front: a prompt_toolkit prompt on a terminal, plain lines otherwise.

``run(attach, cookie_file)`` is what ``udpdht shell`` calls. Without ``attach`` it starts an
embedded ring of five nodes in this process and attaches to the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pydoc
import re
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol, TextIO

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.application.current import get_app
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText, StyleAndTextTuples
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.layout.processors import Processor, Transformation, TransformationInput
from prompt_toolkit.lexers import Lexer
from prompt_toolkit.output import Output
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.shortcuts import CompleteStyle
from prompt_toolkit.styles import Style

from udpdht import DhtError, render
from udpdht.admin import read_cookie
from udpdht.cli_errors import in_words
from udpdht.kad.target import KadAddr, kad_text
from udpdht.net import Address, format_addr, resolve

from .commands import (
    ALIASES,
    COMMANDS,
    FORMATS,
    NODES_ACTIONS,
    WATCHABLE,
    Command,
    CommandError,
    arg_hint,
    available,
    parse,
    split,
    summary,
)
from .session import EMBEDDED_SIZE, Session

# --- where output goes -------------------------------------------------------------------------


class Console(Protocol):
    """Where the shell prints: command output, errors, timings, and node events."""

    def out(self, text: str) -> None: ...

    def error(self, text: str) -> None: ...

    def note(self, text: str) -> None: ...

    def event(self, text: str, level: int) -> None: ...


class TerminalConsole:
    """prompt_toolkit printing: above the prompt while one is shown, errors in red."""

    EVENT_STYLES = {logging.INFO: "ansicyan", logging.WARNING: "ansiyellow"}

    def __init__(self, output: Output | None = None) -> None:
        self.output = output  # None: the terminal
        self._held: list[tuple[str, str]] | None = None  # while a pager has the terminal

    def _print(self, style: str, text: str) -> None:
        if self._held is not None:
            self._held.append((style, text))
            return
        print_formatted_text(FormattedText([(style, text)]), output=self.output)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Keep what is printed meanwhile (node events) until the end, for a pager."""
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            for style, text in held:
                self._print(style, text)

    def out(self, text: str) -> None:
        self._print("", text)

    def error(self, text: str) -> None:
        self._print("ansired", text)

    def note(self, text: str) -> None:
        self._print("ansibrightblack", text)

    def event(self, text: str, level: int) -> None:
        self._print(self.EVENT_STYLES.get(level, "ansired" if level > logging.INFO else ""), text)


class PlainConsole:
    """Scripted use: output on stdout, errors and events on stderr, no colours, no timings."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self._out = out
        self._err = err

    def out(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    def error(self, text: str) -> None:
        print(text, file=self._err, flush=True)

    def note(self, text: str) -> None:
        pass

    def event(self, text: str, level: int) -> None:
        print(text, file=self._err, flush=True)


class EventHandler(logging.Handler):
    """Node log records (joined, left, peer failed...) as one line each on the console."""

    def __init__(
        self, console: Console, level: int, muted: Callable[[], bool] | None = None
    ) -> None:
        super().__init__(level)
        self.console = console
        self.muted = muted  # while it says so, INFO records are not shown

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno <= logging.INFO and self.muted is not None and self.muted():
            return
        try:
            stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
            node = getattr(record, "node", None)
            who = f"node {node}: " if isinstance(node, str) and node.strip("-") else ""
            text = f"[{stamp}] {who}{record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text += f": {type(exc).__name__}: {exc}"
            self.console.event(text, record.levelno)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def node_events(
    console: Console, level: int, muted: Callable[[], bool] | None = None
) -> Iterator[None]:
    """Show the ``udpdht`` loggers' records at ``level`` and above while inside."""
    logger = logging.getLogger("udpdht")
    handler = EventHandler(console, level, muted)
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.level, logger.propagate = saved


# --- completion and the toolbar ----------------------------------------------------------------


def _word_start(text: str) -> int:
    """Where the word being typed at the end of ``text`` starts (quotes respected)."""
    start = 0
    quote: str | None = None
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote is not None:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch.isspace():
            start = i + 1
    return start


def _quote(word: str) -> str:
    if word and all(ch.isalnum() or ch in "-_.:/@+=,%" for ch in word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


class ShellCompleter(Completer):
    """Commands first; then each command's arguments (addresses, keys, actions, topics)."""

    ADDRESS_COMMANDS = ("attach", "join", "ping", "routing")
    KEY_COMMANDS = ("get", "delete", "lookup", "put")

    def __init__(self, session: Session) -> None:
        self.session = session

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        text = document.text_before_cursor
        start = _word_start(text)
        raw = text[start:]
        try:
            before = split(text[:start])
        except CommandError:
            return
        typed = raw.lstrip("'\"")
        for word, meta in self._candidates(before):
            if word.startswith(typed) and word != typed:
                shown = word if not before else _quote(word)
                if self._takes_more(before, word):
                    shown += " "  # so the next word can be typed (or completed) at once
                yield Completion(shown, start_position=-len(raw), display=word, display_meta=meta)

    @staticmethod
    def _takes_more(before: list[str], word: str) -> bool:
        """Whether a completed ``word`` is followed by more arguments."""
        if not before or (before[0] == "watch" and len(before) == 2):
            spec = COMMANDS.get(word)
            return spec is not None and " " in spec.usage
        return before == ["nodes"] and word in ("add", "kill", "join")

    def _candidates(self, before: list[str]) -> list[tuple[str, str]]:
        session = self.session
        mode = session.mode
        if not before:
            return [(name, summary(name, mode)) for name in COMMANDS if available(name, mode)]
        name, position = before[0], len(before)
        if position == 1 and mode == "kad" and name in ("ping", "routing"):
            return [(addr, "kademlia node") for addr in reversed(self._kad_addrs())]
        if position == 1 and name == "attach" and session.kad_addrs:
            kad = [(kad_text(_split_addr(a)), "kademlia node") for a in self._kad_addrs()]
            udp = [(a, "udpdht node") for a in session.live_addrs() if a != session.attached_text]
            return [*reversed(kad), *reversed(udp)]
        if position == 1 and name == "findnode" and session.kad is not None:
            return [(c.hex, str(c)) for c in session.kad.table.contacts()]
        if position == 1 and name in self.ADDRESS_COMMANDS:
            labels = {e.addr: f"embedded #{e.index}" for e in session.embedded or []}
            labels[session.attached_text] = "attached"
            return [(addr, labels.get(addr, "seen")) for addr in reversed(session.live_addrs())]
        if position == 1 and name in self.KEY_COMMANDS:
            return [(key, "key used here") for key in reversed(session.keys)]
        if position == 1 and name == "format":
            return [(style, "current" if style == session.format else "") for style in FORMATS]
        if name == "watch" and position == 2:
            return [(cmd, summary(cmd, mode)) for cmd in WATCHABLE if available(cmd, mode)]
        if position == 1 and name == "help":
            return [(cmd, COMMANDS[cmd].summary) for cmd in COMMANDS]
        if position == 1 and name == "nodes":
            meta = {
                "list": "the nodes and their state",
                "add": "start N more",
                "kill": "crash one",
                "join": "bring one back",
            }
            return [(action, meta[action]) for action in NODES_ACTIONS]
        if position == 2 and before[1] == "kill" and session.embedded:
            return [(str(e.index), e.addr) for e in session.embedded if e.state == "up"]
        if position == 2 and before[1] == "join" and session.embedded:
            return [(str(e.index), e.state) for e in session.embedded if e.state != "up"]
        return []

    def _kad_addrs(self) -> list[str]:
        return [a for a in self.session.kad_addrs if a not in self.session.dead]


def _split_addr(text: str) -> Address:
    from udpdht.net import parse_addr

    return parse_addr(text)


def _fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns, an ellipsis showing the cut."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def toolbar_text(session: Session, width: int = 80) -> FormattedText:
    """The bottom line, within ``width`` columns: attached node, id, successor, last RTT, the
    embedded ring; or, when the attached node stops answering, which neighbour to attach to.

    Long parts are shortened first (an address keeps its port), then the least useful dropped.
    """
    width = max(width - 1, 10)  # the terminal's last column would wrap
    if not session.answering and session.connected:
        go_on = (
            f" 'attach {session.suggestion}' to go on"
            if session.suggestion
            else " looking for a live neighbour…"
        )
        alarm = f" {session.attached_text} not answering "
        return FormattedText(
            [("bg:ansired fg:ansiwhite", _fit(alarm, width)), ("", _fit(go_on, width - len(alarm)))]
        )
    rtt = render.duration(session.last_rtt) if session.last_rtt is not None else "-"
    # (label, short label, value), most useful first.
    if session.kad is not None:
        parts = [
            ("kademlia via", "kad", format_addr(session.kad.bootstrap_addr)),
            ("node", "node", session.node_id[:8] if session.node_id else "?"),
            ("our id", "us", session.kad.id.hex()[:8]),
            ("contacts", "ct", str(len(session.kad.table))),
            ("rtt", "rtt", rtt),
        ]
        return _toolbar_line(session, parts, width)
    parts = [
        ("attached", "at", session.attached_text),
        ("id", "id", session.node_id[:8] if session.node_id else "?"),
        ("successor", "succ", session.successor or "-"),
        ("rtt", "rtt", rtt),
    ]
    if session.embedded is not None:
        up = sum(e.state == "up" for e in session.embedded)
        parts.append(("embedded ring:", "ring:", f"{up} up"))
    return _toolbar_line(session, parts, width)


def _toolbar_line(session: Session, parts: list[tuple[str, str, str]], width: int) -> FormattedText:
    if session.format != "table":
        parts.append(("format", "fmt", session.format))
    sep = " │ "
    for keep in range(len(parts), 0, -1):
        for short in (False, True):
            text = " " + sep.join(
                f"{small if short else label} {value}" for label, small, value in parts[:keep]
            )
            if len(text) <= width:
                return FormattedText([("", text + " ")])
    return FormattedText([("", _fit(text, width))])


# --- highlighting and argument hints -----------------------------------------------------------

_TOKEN = re.compile(r"""\s+|'[^']*'?|"(?:\\.|[^"\\])*"?|[^\s'"]+(?:'[^']*'?|"[^"]*"?)?""")
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$")
_NODE_ID = re.compile(r"^[0-9a-f]{8,40}$")
_NUMBER = re.compile(r"^[0-9]+(\.[0-9]*)?$")

STYLE = Style.from_dict(
    {
        "command": "ansigreen bold",
        "unknown": "ansired",
        "flag": "ansiyellow",
        "address": "ansicyan",
        "id": "ansimagenta",
        "number": "ansiblue",
        "string": "ansibrightgreen",
        "hint": "ansibrightblack",
    }
)


def highlight(line: str) -> StyleAndTextTuples:
    """A typed line in styled pieces: the command word, flags, addresses, node ids, numbers
    and quoted strings (and, after ``watch N``, the repeated command)."""
    fragments: StyleAndTextTuples = []
    index = 0  # of the word, spaces not counted
    command: str | None = None
    for match in _TOKEN.finditer(line):
        word = match.group()
        if word.isspace():
            fragments.append(("", word))
            continue
        at_command = index == 0 or (command == "watch" and index == 2)
        if at_command:
            command = ALIASES.get(word, word)
            style = "class:command" if command in COMMANDS else "class:unknown"
        elif word.startswith("--") and len(word) > 2:
            style = "class:flag"
        elif word[0] in "'\"":
            style = "class:string"
        elif _ADDRESS.match(word):
            style = "class:address"
        elif _NODE_ID.match(word):
            style = "class:id"
        elif _NUMBER.match(word):
            style = "class:number"
        else:
            style = ""
        fragments.append((style, word))
        index += 1
    covered = sum(len(text) for _, text, *_ in fragments)
    if covered < len(line):  # (a stray character the pattern missed: shown as it is)
        fragments.append(("", line[covered:]))
    return fragments


class ShellLexer(Lexer):
    """prompt_toolkit's hook for :func:`highlight`."""

    def lex_document(self, document: Document) -> Callable[[int], StyleAndTextTuples]:
        lines = document.lines

        def get_line(lineno: int) -> StyleAndTextTuples:
            return highlight(lines[lineno]) if lineno < len(lines) else []

        return get_line


class ArgHints(Processor):
    """The arguments still to type, greyed after the cursor (as redis-cli does), unless a
    suggestion from history is shown there; only the options that work in the session's mode
    (no ``--ttl`` on a kademlia network). Gone once the line is entered: the scrollback shows
    what was typed (a new-user trial of issue #11 read "put hello world [--json] [--ttl
    SECONDS]" above its output)."""

    def __init__(self, mode: Callable[[], str] = lambda: "udpdht") -> None:
        self.mode = mode

    def apply_transformation(self, ti: TransformationInput) -> Transformation:
        buffer = ti.buffer_control.buffer
        document = ti.document
        if (
            get_app().is_done
            or ti.lineno != document.line_count - 1
            or not document.is_cursor_at_the_end
            or (buffer.suggestion is not None and buffer.suggestion.text)
        ):
            return Transformation(ti.fragments)
        hint = arg_hint(document.text, self.mode())
        if not hint:
            return Transformation(ti.fragments)
        return Transformation([*ti.fragments, ("class:hint", hint)])


# --- history -----------------------------------------------------------------------------------

HISTORY_SIZE = 1000  # entries the history file keeps


def history_path() -> Path:
    """``$XDG_STATE_HOME/udpdht/shell_history`` (beside the kad:// identity, kad/identity.py)."""
    from udpdht.kad.identity import state_dir

    return state_dir() / "shell_history"


def trim_history(path: Path, keep: int = HISTORY_SIZE) -> None:
    """Keep only the last ``keep`` entries of a prompt_toolkit history file."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return
    entries: list[list[str]] = []
    previous = ""
    for line in lines:
        # An entry: its "# time" line, then one "+" line per line of the command.
        if line.startswith("#") or (line.startswith("+") and previous[:1] not in ("+", "#")):
            entries.append([])
        if line and entries:
            entries[-1].append(line)
        previous = line
    if len(entries) <= keep:
        return
    text = "".join("\n" + "\n".join(entry) + "\n" for entry in entries[-keep:])
    temporary = path.with_name(path.name + ".tmp")
    with contextlib.suppress(OSError):
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)


def _history() -> History:
    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    except OSError:
        return InMemoryHistory()
    trim_history(path)
    return FileHistory(str(path))


# --- the two loops -----------------------------------------------------------------------------


async def _refresh_forever(session: Session, period: float = 1.0) -> None:
    while True:
        await session.refresh()
        await asyncio.sleep(period)


async def _run_cancellable(
    work: Awaitable[str],
    name: str,
    handle_sigint: bool,
    stops: bool = False,
    interrupted: Callable[[str], str] | None = None,
) -> str:
    """Run ``work`` (a command); Ctrl-C (SIGINT, when ``handle_sigint``) cancels it. Its output.

    Raises CommandError for a failure, or an interruption (unless ``stops``: Ctrl-C is how
    the command ends, as for ``watch``; then the output is "").
    """
    loop = asyncio.get_running_loop()
    task = loop.create_task(_as_coroutine(work))
    saved = signal.getsignal(signal.SIGINT) if handle_sigint else None
    if handle_sigint:
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        if stops:
            return ""
        message = interrupted(name) if interrupted is not None else f"'{name}' interrupted"
        raise CommandError(message) from None
    finally:
        if handle_sigint:
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, saved)


async def _as_coroutine(work: Awaitable[str]) -> str:
    return await work


async def watch(
    session: Session, console: Console, cmd: Command, label: str, rounds: int | None = None
) -> str:
    """``watch N CMD``: run CMD every N seconds, each round headed by the time, until
    cancelled (Ctrl-C) or after ``rounds``. A failed round is shown and the watch goes on."""
    assert cmd.inner is not None and cmd.interval is not None
    done = 0
    while rounds is None or done < rounds:
        if done:
            await asyncio.sleep(cmd.interval)
        done += 1
        stamp = time.strftime("%H:%M:%S")
        console.note(f"── {stamp}  every {cmd.interval:g} s: {label}   (Ctrl-C stops)")
        try:
            text = await session.execute(cmd.inner)
        except CommandError as exc:
            console.error(str(exc))
        else:
            if text:
                console.out(text)
    return ""


Pager = Callable[[str], Awaitable[None]]


async def system_pager(text: str) -> None:
    """Page ``text`` with $PAGER (less by default), in a thread: the embedded ring keeps
    running meanwhile. Ctrl-C belongs to the pager while it runs. Unless $LESS says otherwise,
    less keeps the page on the screen when it quits (-X; git sets FRX: a new-user trial saw
    the ring's picture vanish with less's alternate screen), keeps colours (-R), and ends at
    once if the text fits after all (-F)."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    os.environ.setdefault("LESS", "FRX")
    try:
        await asyncio.to_thread(pydoc.pager, text if text.endswith("\n") else text + "\n")
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def prompt_text(session: Session) -> FormattedText:
    """``udpdht> ``, or ``udpdht kad> `` on a kademlia network."""
    if session.kad is not None:
        return FormattedText(
            [("ansigreen bold", "udpdht"), ("ansimagenta bold", " kad"), ("", "> ")]
        )
    return FormattedText([("ansigreen bold", "udpdht"), ("", "> ")])


def make_prompt(
    session: Session,
    *,
    input: Input | None = None,
    output: Output | None = None,
    history: History | None = None,
) -> PromptSession[str]:
    """The prompt: completion menu in columns, suggestions from history, argument hints,
    highlighting, and the toolbar."""
    prompt: PromptSession[str] = PromptSession(
        lambda: prompt_text(session),
        completer=ShellCompleter(session),
        complete_while_typing=False,
        complete_style=CompleteStyle.MULTI_COLUMN,
        auto_suggest=AutoSuggestFromHistory(),
        lexer=ShellLexer(),
        input_processors=[ArgHints(lambda: session.mode)],
        style=STYLE,
        history=history if history is not None else InMemoryHistory(),
        bottom_toolbar=lambda: toolbar_text(session, prompt.app.output.get_size().columns),
        refresh_interval=1.0,
        input=input,
        output=output,
    )
    return prompt


async def interact(
    session: Session,
    console: Console,
    *,
    input: Input | None = None,
    output: Output | None = None,
    history: History | None = None,
    handle_sigint: bool = False,
    banner: Iterable[str] = (),
    pager: Pager | None = None,
) -> int:
    """The interactive loop, until quit, exit or Ctrl-D. Returns the exit status (0).

    Output longer than the terminal is shown through ``pager`` (None: no paging).
    """
    prompt = make_prompt(session, input=input, output=output, history=history)
    for line in banner:
        console.out(line)
    loop = asyncio.get_running_loop()
    refresher = loop.create_task(_refresh_forever(session))
    try:
        with patch_stdout(raw=True), node_events(console, logging.INFO, lambda: session.quiet):
            while True:
                try:
                    line = await prompt.prompt_async()
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    break
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    cmd = parse(line, session.mode)
                except CommandError as exc:
                    console.error(str(exc))
                    continue
                if cmd.name == "quit":
                    break
                start = loop.time()
                if cmd.name == "watch":
                    label = line.split(None, 2)[2]
                    work = watch(session, console, cmd, label)
                else:
                    work = session.execute(cmd)
                slow = (
                    None
                    if cmd.name == "watch"
                    else loop.create_task(_say_if_slow(session, console, cmd))
                )
                try:
                    text = await _run_cancellable(
                        work,
                        cmd.name,
                        handle_sigint,
                        stops=cmd.name == "watch",
                        interrupted=session.interrupted,
                    )
                except CommandError as exc:
                    console.error(str(exc))
                    text = ""
                except Exception as exc:  # (a bug of ours: said, and the shell goes on)
                    console.error(f"'{cmd.name}' failed: {type(exc).__name__}: {exc}")
                    text = ""
                finally:
                    if slow is not None:
                        slow.cancel()
                took = loop.time() - start  # (not the time spent reading it in the pager)
                rows = prompt.app.output.get_size().rows
                if pager is not None and text and text.count("\n") + 1 > rows - 2:
                    await _page(pager, console, text)
                elif text:
                    console.out(text)
                if cmd.name == "watch":  # (on a line of its own, not after the echoed ^C)
                    console.note("\n(watch stopped)" if sys.stdout.isatty() else "(watch stopped)")
                elif cmd.name != "help":
                    console.note(f"({render.duration(took)})")
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
    return 0


SLOW_COMMAND = 1.0  # seconds a command runs before the shell says what it waits for


async def _say_if_slow(session: Session, console: Console, cmd: Command | None = None) -> None:
    """Once a command has run SLOW_COMMAND seconds: which node it waits for (a node that does
    not answer takes seconds to give up on: the wait must not look like a hang). That is the
    attached node, but for 'ping HOST:PORT' and 'attach HOST:PORT': the node named."""
    await asyncio.sleep(SLOW_COMMAND)
    client = session.client
    named = cmd is not None and cmd.name in ("ping", "attach") and cmd.addr is not None
    if named and cmd is not None and cmd.addr is not None:
        console.note(f"waiting for {format_addr(cmd.addr)}… (Ctrl-C to stop)")
    elif client is not None and client.busy():
        console.note(f"{session.attached_text} is still working on it… (Ctrl-C to stop)")
    else:
        console.note(f"waiting for {session.attached_text}… (Ctrl-C to stop)")


async def _page(pager: Pager, console: Console, text: str) -> None:
    held = console.held() if isinstance(console, TerminalConsole) else contextlib.nullcontext()
    try:
        with held:
            await pager(text)
    except Exception as exc:  # a pager that cannot start: the text all the same
        console.error(f"pager failed ({exc}); the output follows")
        console.out(text)


async def _lines(readline: Callable[[], str]) -> AsyncIterator[str]:
    """The lines ``readline`` returns, until it returns "" (end of input).

    A daemon thread reads them, so that the embedded ring keeps running while a slow writer
    thinks, and so that a blocked read never keeps the process from exiting.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()

    def pump() -> None:
        line = "-"
        while line:
            try:
                line = readline()
            except (OSError, ValueError):
                line = ""
            try:
                loop.call_soon_threadsafe(queue.put_nowait, line)
            except RuntimeError:  # the loop has closed: nobody wants more lines
                return

    threading.Thread(target=pump, name="udpdht-shell-stdin", daemon=True).start()
    while line := await queue.get():
        yield line


async def run_script(session: Session, readline: Callable[[], str], console: Console) -> int:
    """Run commands line by line (``#`` comments and blank lines skipped).

    Every command runs even after a failure; returns 0 if all succeeded, else 1.
    """
    failed = False
    lineno = 0
    with node_events(console, logging.WARNING):
        async for line in _lines(readline):
            lineno += 1
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                cmd = parse(line, session.mode)
                if cmd.name == "quit":
                    break
                text = await session.execute(cmd)
            except CommandError as exc:
                console.error(f"line {lineno}: {exc}")
                failed = True
                continue
            if text:
                console.out(text)
    return 1 if failed else 0


# --- entry point -------------------------------------------------------------------------------


async def _start(session: Session, attach: Address | None) -> str:
    """Start the embedded ring or attach; the first banner line."""
    if attach is None:
        await session.start_embedded(EMBEDDED_SIZE)
        return f"embedded ring of {EMBEDDED_SIZE} nodes; attached to {session.attached_text}"
    if isinstance(attach, KadAddr):
        st = await session.attach_kad(attach)
        assert session.kad is not None
        return (
            f"attached to the kademlia network of {st['addr']} (node {st['id'][:8]}); our id "
            f"{session.kad.id.hex()[:8]}, {len(session.kad.table)} contacts; kademlia's protocol "
            "has get, put, lookup, ping, findnode, routing and whoami"
        )
    await session.attach(attach)
    assert session.client is not None
    admin = "" if session.client.cookie is not None else " (no cookie: admin commands refused)"
    return f"attached to {session.attached_text}, node {(session.node_id or '?')[:8]}{admin}"


async def main(attach: Address | None, cookie_file: str | None, tty: bool) -> int:
    err = sys.stderr
    cookie = None
    if cookie_file is not None:
        try:
            cookie = read_cookie(cookie_file)
        except ValueError as exc:
            print(f"udpdht: error: {exc}", file=err)
            return 2
    try:
        target = await resolve(attach) if attach is not None else None
        if isinstance(attach, KadAddr) and target is not None:
            target = KadAddr(*target)
    except ValueError as exc:
        print(f"udpdht: error: {exc}", file=err)
        return 2
    session = Session(cookie=cookie, cookie_addr=target, kad_identity=True)
    try:
        if tty and target is None:
            print(f"starting an embedded ring of {EMBEDDED_SIZE} nodes on 127.0.0.1…", flush=True)
        elif tty and target is not None:  # a node that does not answer takes seconds to say so
            shown = str(target) if isinstance(target, KadAddr) else format_addr(target)
            print(f"attaching to {shown}… (Ctrl-C to stop)", flush=True)
        try:
            first = await _start(session, target)
        except (DhtError, OSError, TimeoutError) as exc:
            where = format_addr(target) if target is not None else "the embedded ring"
            why = in_words(exc)  # "H:P did not answer ..." names the node itself
            if not (why.startswith(where) or where in why):
                why = f"cannot attach to {where}: {why}"
            elif not why.startswith(where):
                why = f"cannot attach: {why}"
            print(f"udpdht: error: {why}", file=err)
            return 1
        if not tty:
            return await run_script(session, sys.stdin.readline, PlainConsole(sys.stdout, err))
        banner = [first, "type 'help' for the commands, Tab to complete, Ctrl-D to leave"]
        return await interact(
            session,
            TerminalConsole(),
            history=_history(),
            handle_sigint=True,
            banner=banner,
            pager=system_pager,
        )
    finally:
        await session.close()


def run(attach: tuple[str, int] | None, cookie_file: str | None) -> int:
    """``udpdht shell [--attach H:P] [--cookie FILE]``; the exit status.

    On a terminal: the interactive shell. Otherwise commands are read from stdin, one per line,
    and the status is 1 if any of them failed.
    """
    try:
        # The standard loop: uvloop's clock has millisecond resolution, too coarse for RTTs.
        return asyncio.run(main(attach, cookie_file, sys.stdin.isatty()))
    except KeyboardInterrupt:
        return 130
