"""The shell's front: a prompt_toolkit prompt on a terminal, plain lines otherwise.

``run(attach, cookie_file)`` is what ``udpdht shell`` calls. Without ``attach`` it starts an
embedded ring of five nodes in this process and attaches to the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol, TextIO

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output
from prompt_toolkit.patch_stdout import patch_stdout

from udpdht import DhtError
from udpdht.admin import read_cookie
from udpdht.cli_errors import in_words
from udpdht.net import Address, format_addr, resolve

from . import render
from .commands import COMMANDS, NODES_ACTIONS, Command, CommandError, parse, split
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

    def _print(self, style: str, text: str) -> None:
        print_formatted_text(FormattedText([(style, text)]), output=self.output)

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

    ADDRESS_COMMANDS = ("attach", "join", "ping")
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
        if not before:
            spec = COMMANDS.get(word)
            return spec is not None and " " in spec.usage
        return before == ["nodes"] and word in ("add", "kill")

    def _candidates(self, before: list[str]) -> list[tuple[str, str]]:
        if not before:
            return [(name, COMMANDS[name].summary) for name in COMMANDS]
        name, position = before[0], len(before)
        session = self.session
        if position == 1 and name in self.ADDRESS_COMMANDS:
            return [(addr, "") for addr in reversed(session.addrs)]
        if position == 1 and name in self.KEY_COMMANDS:
            return [(key, "") for key in reversed(session.keys)]
        if position == 1 and name == "help":
            return [(cmd, COMMANDS[cmd].summary) for cmd in COMMANDS]
        if position == 1 and name == "nodes":
            return [(action, "") for action in NODES_ACTIONS]
        if position == 2 and before[1] == "kill" and session.embedded:
            return [(str(e.index), e.addr) for e in session.embedded if e.state == "up"]
        return []


def toolbar_text(session: Session) -> FormattedText:
    """The bottom line: attached node, id, successor, last RTT (and the embedded ring)."""
    parts = [f" attached {session.attached_text}"]
    parts.append(f"id {session.node_id[:8]}" if session.node_id else "id ?")
    parts.append(f"successor {session.successor or '-'}")
    rtt = render.duration(session.last_rtt) if session.last_rtt is not None else "-"
    parts.append(f"rtt {rtt}")
    if session.embedded is not None:
        up = sum(e.state == "up" for e in session.embedded)
        parts.append(f"embedded ring: {up} up")
    fragments = [("", " │ ".join(parts) + " ")]
    if not session.answering:
        fragments.append(("bg:ansired fg:ansiwhite", " not answering "))
    return FormattedText(fragments)


def history_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "udpdht" / "shell_history"


def _history() -> History:
    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    except OSError:
        return InMemoryHistory()
    return FileHistory(str(path))


# --- the two loops -----------------------------------------------------------------------------


async def _refresh_forever(session: Session, period: float = 1.0) -> None:
    while True:
        await session.refresh()
        await asyncio.sleep(period)


async def _run_cancellable(session: Session, cmd: Command, handle_sigint: bool) -> str:
    """Run one command; Ctrl-C (SIGINT, when ``handle_sigint``) cancels it. Its output.

    Raises CommandError for a failure, or an interruption.
    """
    loop = asyncio.get_running_loop()
    task = loop.create_task(session.execute(cmd))
    saved = signal.getsignal(signal.SIGINT) if handle_sigint else None
    if handle_sigint:
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        raise CommandError(f"'{cmd.name}' interrupted") from None
    finally:
        if handle_sigint:
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, saved)


async def interact(
    session: Session,
    console: Console,
    *,
    input: Input | None = None,
    output: Output | None = None,
    history: History | None = None,
    handle_sigint: bool = False,
    banner: Iterable[str] = (),
) -> int:
    """The interactive loop, until quit, exit or Ctrl-D. Returns the exit status (0)."""
    prompt: PromptSession[str] = PromptSession(
        FormattedText([("ansigreen bold", "udpdht"), ("", "> ")]),
        completer=ShellCompleter(session),
        complete_while_typing=False,
        history=history if history is not None else InMemoryHistory(),
        bottom_toolbar=lambda: toolbar_text(session),
        refresh_interval=1.0,
        input=input,
        output=output,
    )
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
                    cmd = parse(line)
                except CommandError as exc:
                    console.error(str(exc))
                    continue
                if cmd.name == "quit":
                    break
                start = loop.time()
                try:
                    text = await _run_cancellable(session, cmd, handle_sigint)
                except CommandError as exc:
                    console.error(str(exc))
                    text = ""
                if text:
                    console.out(text)
                if cmd.name != "help":
                    console.note(f"({render.duration(loop.time() - start)})")
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
    return 0


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
                cmd = parse(line)
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
    except ValueError as exc:
        print(f"udpdht: error: {exc}", file=err)
        return 2
    session = Session(cookie=cookie, cookie_addr=target)
    try:
        if tty and target is None:
            print(f"starting an embedded ring of {EMBEDDED_SIZE} nodes on 127.0.0.1…", flush=True)
        try:
            first = await _start(session, target)
        except (DhtError, OSError, TimeoutError) as exc:
            where = format_addr(target) if target is not None else "the embedded ring"
            why = in_words(exc)  # "H:P did not answer ..." names the node itself
            why = why if why.startswith(where) else f"cannot attach to {where}: {why}"
            print(f"udpdht: error: {why}", file=err)
            return 1
        if not tty:
            return await run_script(session, sys.stdin.readline, PlainConsole(sys.stdout, err))
        banner = [first, "type 'help' for the commands, Tab to complete, Ctrl-D to leave"]
        return await interact(
            session, TerminalConsole(), history=_history(), handle_sigint=True, banner=banner
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
