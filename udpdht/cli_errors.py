"""Errors in the user's words, for the ``udpdht`` command and the shell.

The exceptions say what happened inside (``RpcTimeout``, a lookup's hops and ids), which a
developer wants in a log; a person at a terminal wants the cause and what to try. This module
turns the common failures into one line of that, and keeps a closed pipe (``udpdht status |
head``) quiet. It loads nothing heavy: ``--help`` imports it (tests/test_startup.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from .errors import Refused, RemoteError, RpcTimeout, SendFailed
from .text import printable

#: A lookup that found no node on the way answering (the ids and hops are for the log).
NO_ROUTE = "the nodes on the way to the key did not answer; the ring may be repairing: try again"

#: The exit status of a command whose reader went away (128 + SIGPIPE, as a shell reports it).
BROKEN_PIPE_STATUS = 141


def shown(addr: tuple[str, int]) -> str:
    """``127.0.0.1:7000``, ``[::1]:7000``."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def unanswered(exc: RpcTimeout, *, hint: bool = True) -> str:
    """``127.0.0.1:7109 did not answer (6 tries, 8.7 s); is a node running there?`` (a
    kademlia node's timeout asks whether a kademlia node is running there)."""
    tries = f"{exc.tries} tr{'y' if exc.tries == 1 else 'ies'}"
    text = f"{shown(exc.addr)} did not answer ({tries}, {exc.elapsed:.1f} s)"
    kind = getattr(exc, "peer_kind", "a node")
    return text + f"; is {kind} running there?" if hint else text


def in_words(exc: BaseException, *, hint: bool = True) -> str:
    """One line for ``exc`` that a user can act on; ``hint``: end a silent node's line with
    "is a node running there?" (off when several are listed and the caller asks once)."""
    from .lookup import LookupFailed  # asyncio: loaded only once something failed

    if isinstance(exc, SendFailed):
        return f"cannot send to {shown(exc.addr)}: {exc.reason}"
    if isinstance(exc, Refused):
        text = f"nothing is listening at {shown(exc.addr)} (its host says the port is closed)"
        kind = getattr(exc, "peer_kind", "a node")
        return text + f"; is {kind} running there?" if hint else text
    if isinstance(exc, RpcTimeout):
        return unanswered(exc, hint=hint)
    if isinstance(exc, LookupFailed):
        if exc.cause is not None:  # the first node asked (a bootstrap) did not answer
            return in_words(exc.cause, hint=hint)
        return NO_ROUTE
    if isinstance(exc, RemoteError) and exc.message.partition(": ")[2].startswith(
        "no live route to "
    ):
        return NO_ROUTE  # the attached node's LookupFailed, as its error reply ("get: no ...")
    text = printable(" ".join(str(exc).split())) or type(exc).__name__
    if isinstance(exc, RemoteError) and "lost contact with its ring" in text:
        text += ISOLATED_WAY_OUT  # (it lasts until a peer of its ring answers again)
    return text


#: What to do about a node that lost its ring (Node.isolated): its ring may be gone for good.
ISOLATED_WAY_OUT = (
    "; it serves again once a node of its ring answers: if the others are gone for good, "
    "restart it with 'udpdht node --new-ring' (it keeps its data), or try another node"
)


def joined_words(failures: list[tuple[tuple[str, int], BaseException]]) -> str:
    """Why no bootstrap worked: each one's reason, with one question at the end when none of
    them answered at all."""
    parts = []
    for addr, exc in failures:
        text = in_words(exc, hint=False)
        parts.append(text if shown(addr) in text else f"{shown(addr)}: {text}")
    text = "; ".join(parts)
    if all(type(exc) in (RpcTimeout, Refused) or _silent_start(exc) for _, exc in failures):
        text += "; is a node running there?" if len(failures) == 1 else "; are nodes running there?"
    return text


def _silent_start(exc: BaseException) -> bool:
    cause = getattr(exc, "cause", None)  # LookupFailed's: the start's own failure
    return type(cause) is RpcTimeout


def quiet_on_broken_pipe(run: Callable[[], int]) -> int:
    """``run()``, but a reader that went away (``udpdht status | head -c 20``) ends the command
    quietly with status 141, as Unix tools do: no traceback, also when the pipe breaks only at
    the final flush of what ``run`` printed."""
    try:
        try:
            return run()
        finally:
            sys.stdout.flush()  # here, where a broken pipe can still be caught
    except BrokenPipeError:
        # Keep Python from complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE_STATUS
