"""What the shell is attached to, and running commands against it.

The shell is a client: it talks to nodes only through :class:`udpdht.Client`. The embedded ring
uses :class:`udpdht.Node` just to start and stop nodes in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from udpdht import Client, DhtError, KeyNotFound, Node, ids, render, render_kad, ringdraw
from udpdht.admin import find_cookie
from udpdht.cli_errors import in_words
from udpdht.errors import UNREADABLE, Refused, RpcTimeout
from udpdht.kad.client import KadClient, NotSent
from udpdht.kad.identity import claim
from udpdht.kad.target import NO_ADMIN, KadAddr, cannot, kad_text
from udpdht.net import Address, format_addr, parse_addr, resolve
from udpdht.node import LOCAL_RING
from udpdht.text import duration, printable

from . import formats
from .commands import KEYS_PAGE, Command, CommandError, available, help_text, unavailable
from .commands import RING_WALK as RING_WALK

EMBEDDED_SIZE = 5
PROBE_TIMEOUT = 2.0  # seconds the toolbar and a re-attach wait for a node's status
SETTLE_TIMEOUT = 15.0  # seconds the embedded ring may take to close and settle after starting
LEAVE_TIMEOUT = 10.0  # seconds a leaving node may take to hand its keys over
REBIND_TRIES = 40  # 'nodes join I': tries to bind the node's old port, 50 ms apart
WAKE_TIMEOUT = 0.5  # seconds a silent attached node has to answer before a command fails
# Commands that need no answer from the attached node (ping HOST:PORT asks another).
#: Commands that ask the attached node nothing: they run when it is silent too (whoami says
#: what it is attached to, the answer a user wants then: a new user's trial).
LOCAL_COMMANDS = frozenset({"attach", "nodes", "format", "watch", "help", "quit", "whoami"})


@dataclass
class EmbeddedNode:
    """A node of the embedded ring; its number never changes, even once it has stopped."""

    index: int
    node: Node
    state: str = "up"  # up, killed (crashed on purpose), left (gracefully), stopped (shutdown)

    @property
    def addr(self) -> str:
        return format_addr(self.node.addr)


def _sentence(text: str) -> str:
    """One line, whatever the exception said."""
    return " ".join(text.split()) or "failed"


async def _say_wrong_protocol(addr: Address, exc: BaseException) -> None:
    """After ``attach`` met silence at ``addr``: when the other protocol answers there, raise
    the error that says which to use (kad/crosscheck.py) instead of "did not answer"."""
    if isinstance(exc, Refused) or not isinstance(exc, (RpcTimeout, TimeoutError)):
        return
    from udpdht.kad.crosscheck import wrong_protocol

    wrong = await wrong_protocol(addr, after=0, shell=True)
    if wrong is not None:
        raise wrong from None


class Session:
    """The attached client, the embedded ring if any, and what completion and the toolbar use."""

    def __init__(
        self,
        *,
        cookie: bytes | None = None,
        cookie_addr: Address | None = None,
        kad_identity: bool = False,
    ) -> None:
        self.client: Client | None = None
        # On a kademlia network, use the user's kademlia id and port (kad/identity.py), as the
        # CLI does: one contact for the network to keep, not one more per session.
        self.kad_identity = kad_identity
        self.attached: Address | None = None
        # Attached to a kademlia network (attach kad://H:P): its client; then `client` is None.
        self.kad: KadClient | None = None
        self.kad_addrs: dict[str, None] = {}  # kademlia nodes heard from, most recent last
        self.embedded: list[EmbeddedNode] | None = None
        self.cookie = cookie  # from --cookie, for cookie_addr (or any node without its own)
        self.cookie_addr = cookie_addr
        # What the toolbar shows; refresh() keeps it current.
        self.node_id: str | None = None  # hex
        self.successor: str | None = None
        self.last_rtt: float | None = None
        self.answering = False
        # Set while the shell itself reports what nodes are doing (starting many at once):
        # their routine log records would only repeat it.
        self.quiet = False
        # What completion offers, most recent last; addresses that did not answer are not.
        self.addrs: dict[str, None] = {}
        self.keys: dict[str, None] = {}
        self.dead: set[str] = set()
        # While the attached node does not answer: a neighbour of it that does (toolbar).
        self.suggestion: str | None = None
        self._neighbours: list[str] = []  # the attached node's, from its last status
        self.format = "table"  # format table|json|plain: how status, lookup and stats print
        # How far a running 'leave' got, for what Ctrl-C during it says: (address, phase).
        self._leaving: tuple[str, str] | None = None
        self._handlers: dict[str, Callable[[Command], Awaitable[str]]] = {
            "get": self._get,
            "put": self._put,
            "delete": self._delete,
            "lookup": self._lookup,
            "status": self._status,
            "ring": self._ring,
            "leafset": self._leafset,
            "fingers": self._fingers,
            "stats": self._stats,
            "ping": self._ping,
            "attach": self._attach,
            "join": self._join,
            "leave": self._leave,
            "shutdown": self._shutdown,
            "keys": self._keys,
            "nodes": self._nodes,
            "format": self._format,
            "watch": self._watch,
            "whoami": self._whoami,
        }
        self._kad_handlers: dict[str, Callable[[Command], Awaitable[str]]] = {
            "get": self._kad_get,
            "put": self._kad_put,
            "lookup": self._kad_lookup,
            "ping": self._kad_ping,
            "findnode": self._kad_findnode,
            "routing": self._kad_routing,
            "whoami": self._kad_whoami,
        }

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """``kad`` while attached to a kademlia network, else ``udpdht``."""
        return "kad" if self.kad is not None else "udpdht"

    @property
    def connected(self) -> bool:
        """Whether the shell is attached to anything (a udpdht node or a kademlia network)."""
        return self.client is not None or self.kad is not None

    @property
    def attached_text(self) -> str:
        if self.attached is None:
            return "-"
        return kad_text(self.attached) if self.kad is not None else format_addr(self.attached)

    async def start_embedded(self, size: int = EMBEDDED_SIZE) -> None:
        """Start ``size`` nodes on 127.0.0.1 in this process, wait for the ring, attach."""
        self.embedded = []
        await self._add_nodes(size, None)
        await self.attach(self.embedded[0].node.addr)
        await self._settle(size)

    async def _settle(self, size: int, within: float = SETTLE_TIMEOUT) -> int:
        """Wait (a little) until a walk from the attached node goes round all ``size`` nodes,
        each settled (so that a first ``get`` of an absent key says "not found" at once).

        Returns how many nodes the last walk found answering.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        found = 0
        while True:
            with contextlib.suppress(CommandError):
                entries = await self.walk(max(RING_WALK, size + 1))
                found = sum("error" not in st for st in entries)
                if len(entries) == size == found and all(
                    st["predecessor"] is not None and st.get("settled", True) for st in entries
                ):
                    return found
            if loop.time() > deadline:
                return found
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.close()
        kad, self.kad = self.kad, None
        if kad is not None:
            await kad.close()
        if self.embedded:
            live = [e for e in self.embedded if e.state == "up"]
            await asyncio.gather(*(e.node.stop() for e in live), return_exceptions=True)
            for e in live:
                e.state = "killed"

    # --- attaching -----------------------------------------------------------------------------

    def _client(self) -> Client:
        if self.client is None:
            raise CommandError("not attached to any node: use 'attach HOST:PORT'")
        return self.client

    def _kad(self) -> KadClient:
        if self.kad is None:
            raise CommandError("not attached to a kademlia network: use 'attach kad://HOST:PORT'")
        return self.kad

    def _embedded_at(self, addr: str) -> EmbeddedNode | None:
        for e in self.embedded or []:
            if e.addr == addr:
                return e
        return None

    def cookie_for(self, addr: Address) -> bytes | None:
        """The admin cookie to use with the node at ``addr``, if the shell knows one."""
        embedded = self._embedded_at(format_addr(addr))
        if embedded is not None:
            return embedded.node.cookie
        if self.cookie is not None and addr == self.cookie_addr:
            return self.cookie
        local = find_cookie(*addr)
        return local or self.cookie

    async def attach(
        self, addr: Address, *, within: float | None = None, cookie: bytes | None = None
    ) -> dict[str, Any]:
        """Talk to the node at ``addr`` from now on, once it has answered; its status.
        ``cookie``: its admin cookie (``attach --cookie FILE``), kept for it once it answers.

        A :class:`KadAddr` attaches to a kademlia network (:meth:`attach_kad`); the status is
        then ``{"addr", "id", "rtt_s"}`` of the node pinged."""
        if isinstance(addr, KadAddr):
            return await self.attach_kad(addr, within=within)
        addr = await resolve(addr)
        # (A node killed under the shell: "nothing is listening" in half a second, not ~6 s.)
        client = Client(addr, cookie=cookie or self.cookie_for(addr), probe_every_call=True)
        await client.open()
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            st = await asyncio.wait_for(client.status(), within)
            rtt = loop.time() - start
        except BaseException as exc:
            await client.close()
            if isinstance(exc, (DhtError, TimeoutError)):
                self.dead.add(format_addr(addr))
            await _say_wrong_protocol(addr, exc)
            raise
        old, self.client, self.attached = self.client, client, addr
        if cookie is not None:
            self.cookie, self.cookie_addr = cookie, addr
        if old is not None:
            await old.close()
        await self._leave_kad()
        self._note_status(st, rtt)
        return st

    async def _leave_kad(self) -> None:
        kad, self.kad = self.kad, None
        if kad is not None:
            await kad.close()
            self.node_id = None

    async def attach_kad(self, addr: Address, *, within: float | None = None) -> dict[str, Any]:
        """Join the kademlia network of the node at ``addr`` as a client: ping it, then look up
        our own id to learn the contacts near us (what kademlia's bootstrap does)."""
        host, port = await resolve((addr[0], addr[1]))
        kad = KadClient((host, port), identity=claim() if self.kad_identity else None)
        try:
            node, rtt = await asyncio.wait_for(kad.open(), within)
            await asyncio.wait_for(kad.find_node(kad.id), within)
        except BaseException as exc:
            await kad.close()
            if isinstance(exc, (DhtError, TimeoutError)):
                self.dead.add(format_addr((host, port)))
            await _say_wrong_protocol(KadAddr(host, port), exc)
            raise
        old, self.client = self.client, None
        if old is not None:
            await old.close()
        await self._leave_kad()
        self.kad, self.attached = kad, KadAddr(host, port)
        self.node_id = node.hex
        self.successor = None
        self.answering, self.suggestion, self.last_rtt = True, None, rtt
        self._neighbours = []
        self._note_kad(kad)
        return {"addr": format_addr((host, port)), "id": node.hex, "rtt_s": rtt}

    def _note_kad(self, kad: KadClient) -> None:
        for contact in kad.table.contacts():
            text = format_addr(contact.addr)
            self.kad_addrs.pop(text, None)
            self.kad_addrs[text] = None
            self.dead.discard(text)

    async def _reattach(self, prefer: Iterable[str]) -> str | None:
        """After the attached node went away: attach to one that answers; its address."""
        candidates = list(prefer)
        candidates += [e.addr for e in self.embedded or [] if e.state == "up"]
        gone = self.attached_text
        for text in dict.fromkeys(candidates):
            embedded = self._embedded_at(text)
            if text == gone or (embedded is not None and embedded.state != "up"):
                continue
            with contextlib.suppress(DhtError, TimeoutError, ValueError, OSError):
                await self.attach(parse_addr(text), within=PROBE_TIMEOUT)
                return text
        self.answering = False
        return None

    def _note_status(self, st: dict[str, Any], rtt: float | None = None) -> None:
        """Remember what a status of the attached node says (toolbar, completion)."""
        if st.get("addr") == self.attached_text:
            self.node_id = st["id"]
            succs = st["successors"]
            self.successor = succs[0]["addr"] if succs else None
            self.answering = True
            self.suggestion = None
            self._neighbours = [p["addr"] for p in [*succs, *st["predecessors"]]]
            if rtt is not None:
                self.last_rtt = rtt
        self.dead.discard(st["addr"])  # it answered
        self.remember_addr(st["addr"])
        for peer in [*st["successors"], *st["predecessors"], *st["fingers"]]:
            self.remember_addr(peer["addr"])

    MAX_ADDRS = 256  # addresses kept for completion (statuses name new ones: a bound)

    def remember_addr(self, addr: str) -> None:
        self.addrs.pop(addr, None)
        self.addrs[addr] = None
        while len(self.addrs) > self.MAX_ADDRS:
            del self.addrs[next(iter(self.addrs))]

    def live_addrs(self) -> list[str]:
        """The addresses completion offers, most recent last: none that stopped answering."""
        return [addr for addr in self.addrs if addr not in self.dead]

    def remember_key(self, key: str) -> None:
        self.keys.pop(key, None)
        self.keys[key] = None

    async def refresh(self) -> None:
        """Ask the attached node for its status (for the toolbar); never raises a DhtError.
        On a kademlia network: ping the node attached through."""
        if self.kad is not None:
            await self._refresh_kad(self.kad)
            return
        client = self.client
        if client is None:
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            st = await asyncio.wait_for(client.status(), PROBE_TIMEOUT)
        except (DhtError, TimeoutError, RuntimeError, OSError):
            if client is self.client:
                self.answering = False
                self.dead.add(self.attached_text)
                await self._suggest_neighbour(client)
            return
        if client is self.client:
            self._note_status(st, loop.time() - start)

    async def _refresh_kad(self, kad: KadClient) -> None:
        try:
            _, rtt = await kad.ping_node(kad.bootstrap_addr, tries=2, deadline=PROBE_TIMEOUT)
        except (DhtError, OSError):
            if kad is self.kad:
                self.answering = False
                self.dead.add(format_addr(kad.bootstrap_addr))
                self.suggestion = next(
                    (a for a in reversed(self.kad_addrs) if a not in self.dead), None
                )
                if self.suggestion is not None:
                    self.suggestion = "kad://" + self.suggestion
            return
        if kad is self.kad:
            self.answering, self.last_rtt, self.suggestion = True, rtt, None
            self.dead.discard(format_addr(kad.bootstrap_addr))
            self._note_kad(kad)

    NEIGHBOURS_TRIED = 8  # neighbours of a silent node pinged for a suggestion, at most

    async def _suggest_neighbour(self, client: Client) -> None:
        """Find a neighbour of the silent attached node that answers, for the toolbar."""
        if self.suggestion is not None and self.suggestion not in self.dead:
            return
        self.suggestion = None
        candidates = [*self._neighbours, *(e.addr for e in self.embedded or [] if e.state == "up")]
        # (A few: a silent node's status named 200 silent neighbours, pinged one after another
        # for minutes before the next command; a helper's audit.)
        for text in list(dict.fromkeys(candidates))[: self.NEIGHBOURS_TRIED]:
            if text in self.dead or text == self.attached_text:
                continue
            try:
                await asyncio.wait_for(client.ping(parse_addr(text)), PROBE_TIMEOUT / 2)
            except (DhtError, TimeoutError, ValueError, OSError):
                self.dead.add(text)
                continue
            if client is self.client and not self.answering:
                self.suggestion = text
            return

    # --- running commands ----------------------------------------------------------------------

    async def execute(self, cmd: Command) -> str:
        """Run ``cmd``; its output. Raises CommandError, whose message is one sentence."""
        if cmd.name == "help":
            return help_text(cmd.topic, self.mode)
        if cmd.name == "quit":
            return ""
        self._check_mode(cmd)
        kad_handler = self._kad_handlers.get(cmd.name) if self.kad is not None else None
        handler = kad_handler or self._handlers[cmd.name]
        try:
            await self._still_silent(cmd)
            return await handler(cmd)
        except CommandError:
            raise
        except KeyNotFound:
            raise CommandError(f"{cmd.key!r}: not found") from None
        except (DhtError, ValueError) as exc:
            client = self.client
            if isinstance(exc, RpcTimeout) and client is not None and exc.addr == client.addr:
                self.answering = False  # the next command asks quickly first (_still_silent)
                self.dead.add(self.attached_text)
            raise CommandError(in_words(exc)) from None
        except TimeoutError:
            raise CommandError(f"{self.attached_text} did not answer in time") from None
        except UNREADABLE as exc:
            # A node's answer of the wrong shape (a field missing, of another type): a broken
            # or hostile node must not end the shell with a traceback (a helper's audit).
            raise CommandError(
                _sentence(printable(f"cannot read the node's answer ({type(exc).__name__}: {exc})"))
            ) from None
        except OSError as exc:
            raise CommandError(_sentence(f"network error: {exc.strerror or exc}")) from None

    def _check_mode(self, cmd: Command) -> None:
        """CommandError, before anything is sent, for what the mode cannot do."""
        for one in (cmd, cmd.inner):
            if one is None:
                continue
            if not available(one.name, self.mode):
                raise CommandError(unavailable(one.name, self.mode))
            if self.kad is not None and one.name == "put" and one.ttl is not None:
                raise CommandError(cannot("ttl"))
            if self.kad is not None and one.name == "get" and one.meta:
                raise CommandError(cannot("meta"))

    async def _still_silent(self, cmd: Command) -> None:
        """When the attached node is known to have stopped answering: one quick ping first,
        and at once a CommandError that says where to go on if it is still silent (rather than
        seconds of waiting for the tries of every command to run out)."""
        client = self.client
        if client is None or self.answering or cmd.name in LOCAL_COMMANDS:
            return
        if cmd.name == "ping" and cmd.addr is not None:
            return
        try:
            await asyncio.wait_for(client.endpoint.call(client.addr, "ping", tries=1), WAKE_TIMEOUT)
        except (DhtError, TimeoutError, OSError):
            if self.suggestion is None:  # no toolbar found one (piped input): look now
                with contextlib.suppress(DhtError, TimeoutError, OSError):
                    await self._suggest_neighbour(client)
            go_on = self.suggestion or "HOST:PORT"
            raise CommandError(
                f"{self.attached_text} is not answering; 'attach {go_on}' to go on"
            ) from None
        if client is self.client:  # it is back
            self.answering = True
            self.dead.discard(self.attached_text)

    async def _get(self, cmd: Command) -> str:
        assert cmd.key is not None
        if cmd.meta:
            from udpdht.values import show_meta

            stored = await self._client().get_record(cmd.key)
            self.remember_key(cmd.key)
            return render.value_text(stored.value) + "\n" + show_meta(stored)
        value = await self._client().get(cmd.key)
        self.remember_key(cmd.key)
        return render.value_text(value)

    async def _put(self, cmd: Command) -> str:
        assert cmd.key is not None
        short = await self._client().put(cmd.key, cmd.value, ttl=cmd.ttl)
        self.remember_key(cmd.key)
        stored = f"stored {cmd.key!r}" + (f" for {duration(cmd.ttl)}" if cmd.ttl else "")
        return stored if short is None else f"{stored}\nwarning: {cmd.key!r} is stored {short}"

    async def _delete(self, cmd: Command) -> str:
        assert cmd.key is not None
        existed, short = await self._client().delete_checked(cmd.key)
        self.keys.pop(cmd.key, None)
        if not existed:  # the CLI's words (udpdht delete exits 1)
            raise CommandError(f"{cmd.key!r}: not found (nothing to delete)")
        deleted = f"deleted {cmd.key!r}"
        if short is None:
            return deleted
        return f"{deleted}\nwarning: {cmd.key!r} is deleted {short.describe(deleted=True)}"

    async def _lookup(self, cmd: Command) -> str:
        assert cmd.key is not None
        found = await self._client().lookup(cmd.key)
        self.remember_key(cmd.key)
        for hop in found.hops:
            self.remember_addr(format_addr(hop.peer.addr))
        if self.format != "table":
            return formats.as_text(formats.lookup_object(cmd.key, found), self.format)
        return "\n".join(render.lookup_lines(cmd.key, found))

    async def _keys(self, cmd: Command) -> str:
        """A page of the attached node's keys, as 'udpdht keys' shows it."""
        client = self._client()
        st = await client.status()
        limit = cmd.number or KEYS_PAGE
        found, nxt = await client.keys(limit, after=cmd.after)
        rows = render.key_rows(found, st)
        for row in rows:
            if row["key"] is not None:
                self.remember_key(row["key"])
        more = None
        if nxt is not None:
            more = f"keys {render.next_page(nxt, shlex.quote)}"
            more += f" --limit {limit}" if limit != KEYS_PAGE else ""
        lines = render.keys_lines(st["addr"], rows, time.time(), after=cmd.after, more=more)
        return "\n".join(lines)

    async def _fresh_status(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        st = await self._client().status()
        self._note_status(st, loop.time() - start)
        return st

    async def _status(self, cmd: Command) -> str:
        st = await self._fresh_status()
        if self.format != "table":
            return formats.as_text(st, self.format)
        return "\n".join(render.status_lines(st))

    async def _leafset(self, cmd: Command) -> str:
        return "\n".join(render.leafset_lines(await self._fresh_status()))

    async def _fingers(self, cmd: Command) -> str:
        return "\n".join(render.fingers_lines(await self._fresh_status()))

    async def _stats(self, cmd: Command) -> str:
        st = await self._fresh_status()
        if self.format != "table":
            obj = {"id": st["id"], "addr": st["addr"], "rpc": st["rpc"], "store": st["store"]}
            return formats.as_text(obj, self.format)
        return "\n".join(render.stats_lines(st))

    async def _format(self, cmd: Command) -> str:
        which = "lookup and findnode" if self.kad is not None else "status, lookup and stats"
        if cmd.style is None:
            return (
                f"format {self.format} ({which}; also: "
                + ", ".join(s for s in formats.STYLES if s != self.format)
                + ")"
            )
        self.format = cmd.style
        return f"{which} now print as {cmd.style}"

    async def _watch(self, cmd: Command) -> str:
        raise CommandError("'watch' runs until Ctrl-C, so only in the interactive shell")

    async def walk(self, limit: int | None = None) -> list[dict[str, Any]]:
        """``Client.ring`` (``limit``: RING_WALK nodes), with each unreachable node's error made
        one sentence."""
        entries = await self._client().ring(limit or RING_WALK)
        return [{**e, "error": _sentence(e["error"])} if "error" in e else e for e in entries]

    async def _ring(self, cmd: Command) -> str:
        limit = cmd.number or RING_WALK
        entries = await self.walk(limit)
        for st in entries:
            if "error" not in st:
                self._note_status(st)
        labels = {e.addr: f"#{e.index}" for e in self.embedded or []}
        lines = render.ring_lines(entries, self.attached_text, labels, limit=limit)
        if cmd.action != "list" and entries and "error" not in entries[0]:
            nodes, fingers = ringdraw.from_statuses(entries[0], entries[1:], limit=limit)
            width = max(ringdraw.MIN_WIDTH, min(80, shutil.get_terminal_size().columns))
            lines = [*ringdraw.draw_text(nodes, fingers, width=width), "", *lines]
        return "\n".join(lines)

    async def _ping(self, cmd: Command) -> str:
        if isinstance(cmd.addr, KadAddr):
            raise CommandError(
                f"{cmd.addr} is a kademlia node: 'attach {cmd.addr}' first, then 'ping'"
            )
        client = self._client()
        target = await resolve(cmd.addr) if cmd.addr is not None else client.addr
        text = format_addr(target)
        try:
            if target == client.addr:
                # The attached node also says whether it is isolated, and why, as `udpdht
                # ping` prints it (the shell's ping said neither).
                info = await client.ping_info()
            else:
                node_id, rtt = await client.ping(target)
        except (DhtError, TimeoutError):
            self.dead.add(text)
            raise
        self.dead.discard(text)
        self.remember_addr(text)
        if target == client.addr:
            self.last_rtt = info["rtt_s"]
            return render.ping_text({**info, "addr": text})
        return f"{text} (id {ids.short(node_id)}) answered in {render.duration(rtt)}"

    async def _attach(self, cmd: Command) -> str:
        assert cmd.addr is not None
        if cmd.cookie is not None and isinstance(cmd.addr, KadAddr):
            raise CommandError(NO_ADMIN)
        st = await self.attach(cmd.addr, cookie=cmd.cookie)
        if self.kad is not None:
            return (
                f"attached to the kademlia network of {st['addr']} (node {st['id'][:8]}); "
                f"our id {self.kad.id.hex()[:8]}, {len(self.kad.table)} contacts so far; "
                "'help' lists what works here"
            )
        admin = "" if self._client().cookie is not None else "; no cookie, so no admin commands"
        return f"attached to {st['addr']} (id {st['id'][:8]}){admin}"

    async def _join(self, cmd: Command) -> str:
        assert cmd.addr is not None
        target = await resolve(cmd.addr)
        successor = await self._admin_client("join").join(target)
        self.remember_addr(format_addr(target))
        after = f"; its successor is {successor}" if successor is not None else ""
        return f"{self.attached_text} joined the ring of {format_addr(target)}{after}"

    def interrupted(self, name: str) -> str:
        """What Ctrl-C during command ``name`` did, in one sentence."""
        if name != "leave" or self._leaving is None:
            return f"'{name}' interrupted"
        gone, phase = self._leaving
        self._leaving = None
        if phase == "asked":
            return f"'leave' interrupted; {gone} may still leave: 'status' tells"
        if phase == "handing over":
            return f"'leave' interrupted; {gone} goes on handing its keys over, then stops"
        embedded = self._embedded_at(gone)
        back = f" ('nodes join {embedded.index}' brings it back)" if embedded else ""
        return (
            f"Ctrl-C came after the hand-off had finished: {gone} left the ring with its keys "
            f"handed over{back}; 'attach HOST:PORT' to go on"
        )

    def _admin_client(self, name: str) -> Client:
        """The client, which must hold the attached node's cookie for ``name``."""
        client = self._client()
        if client.cookie is None:
            raise CommandError(
                f"{name} needs the node's cookie (the file 'cookie' in its data dir): "
                f"attach {self.attached_text} --cookie FILE"
            )
        return client

    async def _leave(self, cmd: Command) -> str:
        client = self._admin_client("leave")
        st = await client.status()
        gone = self.attached_text
        try:
            self._leaving = (gone, "asked")
            await client.leave()
            self._leaving = (gone, "handing over")
            # The node leaves just after replying; wait until it has handed its keys over.
            embedded = self._embedded_at(gone)
            if embedded is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(embedded.node.finished.wait(), LEAVE_TIMEOUT)
                embedded.state = "left"
            else:
                await self._until_silent(client, LEAVE_TIMEOUT)
            self._leaving = (gone, "done")
            self.dead.add(gone)
            text = await self._after_leave(gone, st, embedded)
        except Exception:  # (not on Ctrl-C: interrupted() says how far it got)
            self._leaving = None
            raise
        self._leaving = None
        return text

    async def _shutdown(self, cmd: Command) -> str:
        """Stop the attached node at once, as 'udpdht shutdown' does; then attach elsewhere."""
        client = self._admin_client("shutdown")
        st = await client.status()
        gone = self.attached_text
        await client.shutdown()
        embedded = self._embedded_at(gone)
        if embedded is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(embedded.node.finished.wait(), LEAVE_TIMEOUT)
            await embedded.node.stop()
            embedded.state = "stopped"
        else:
            await self._until_silent(client, LEAVE_TIMEOUT)
        return await self._after_leave(gone, st, embedded, "shutdown")

    async def _after_leave(
        self,
        gone: str,
        st: dict[str, Any],
        embedded: EmbeddedNode | None,
        command: str = "leave",
    ) -> str:
        self.addrs.pop(gone, None)
        self.dead.add(gone)
        new = await self._reattach(p["addr"] for p in st["successors"])
        alone = not st["successors"] and not st["predecessors"] and not st.get("isolated")
        text = render.admin_done(gone, command, alone)
        if embedded is not None:
            text += f" ('nodes join {embedded.index}' brings it back)"
        if new is None:
            return text + "; no other node answers, so 'attach HOST:PORT' to go on"
        return text + f"; now attached to {new}"

    @staticmethod
    async def _until_silent(client: Client, within: float) -> None:
        """Wait until the client's node stops answering (it is leaving), for ``within`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            try:
                await asyncio.wait_for(client.status(), 0.5)
            except (DhtError, TimeoutError):
                return
            await asyncio.sleep(0.1)

    # --- the embedded ring ---------------------------------------------------------------------

    async def _nodes(self, cmd: Command) -> str:
        if self.embedded is None:
            raise CommandError(
                "'nodes' works only in the embedded ring (start the shell without --attach)"
            )
        if cmd.action == "add":
            assert cmd.number is not None
            return await self._nodes_add(cmd.number)
        if cmd.action == "kill":
            assert cmd.number is not None
            return await self._nodes_kill(cmd.number)
        if cmd.action == "join":
            assert cmd.number is not None
            return await self._nodes_join(cmd.number)
        return await self._nodes_list()

    async def _add_nodes(self, count: int, bootstrap: Address | None) -> list[EmbeddedNode]:
        """Start ``count`` nodes, joining through ``bootstrap`` (None: the first starts a ring)."""
        assert self.embedded is not None
        added = []
        for _ in range(count):
            node = Node("127.0.0.1", 0, config=LOCAL_RING)
            await node.start()
            try:
                if bootstrap is not None:
                    await node.join(bootstrap)
            except BaseException:
                await node.stop()
                raise
            bootstrap = bootstrap or node.addr
            entry = EmbeddedNode(len(self.embedded), node)
            self.embedded.append(entry)
            self.remember_addr(entry.addr)
            added.append(entry)
        return added

    async def _nodes_add(self, count: int) -> str:
        assert self.embedded is not None
        live = [e for e in self.embedded if e.state == "up"]
        via = self._embedded_at(self.attached_text)
        bootstrap = via if via is not None and via.state == "up" else (live[0] if live else None)
        self.quiet = True
        try:
            added = await self._add_nodes(count, bootstrap.node.addr if bootstrap else None)
        finally:
            self.quiet = False
        how = f"joined the ring through {bootstrap.addr}" if bootstrap else "started a new ring"
        lines = [f"node #{e.index} at {e.addr} (id {ids.short(e.node.id)}) {how}" for e in added]
        if not self.answering or self.client is None:
            new = await self._reattach([added[0].addr])
            if new is not None:
                lines.append(f"now attached to {new}")
        # Wait until the ring has taken them in, so that 'ring' shows them at once.
        up = sum(e.state == "up" for e in self.embedded)
        found = await self._settle(up, within=5.0)
        if found == up:
            lines.append(f"the ring has {up} nodes")
        else:
            lines.append(f"a walk round the ring finds {found} of {up} nodes so far")
        return "\n".join(lines)

    def _embedded_entry(self, index: int) -> EmbeddedNode:
        assert self.embedded is not None
        if not 0 <= index < len(self.embedded):
            last = len(self.embedded) - 1
            raise CommandError(f"there is no embedded node #{index} (they are #0..#{last})")
        return self.embedded[index]

    async def _nodes_join(self, index: int) -> str:
        """Bring back a node that left or was killed: same address, so the same id."""
        entry = self._embedded_entry(index)
        if entry.state == "up":
            raise CommandError(f"embedded node #{index} is up already; 'nodes kill {index}' first")
        via = self._embedded_at(self.attached_text)
        live = [e for e in self.embedded or [] if e.state == "up"]
        bootstrap = via if via is not None and via.state == "up" else (live[0] if live else None)
        host, port = entry.node.addr
        node = Node(host, port, config=LOCAL_RING)
        for attempt in range(REBIND_TRIES):  # a socket closed a moment ago may not be free yet
            try:
                await node.start()
                break
            except OSError as exc:
                if attempt == REBIND_TRIES - 1:
                    raise CommandError(
                        f"cannot bring node #{index} back at {entry.addr}: {exc.strerror or exc}"
                    ) from None
                node = Node(host, port, config=LOCAL_RING)
                await asyncio.sleep(0.05)
        try:
            if bootstrap is not None:
                await node.join(bootstrap.node.addr)
        except BaseException:
            await node.stop()
            raise
        was = entry.state
        entry.node, entry.state = node, "up"
        self.dead.discard(entry.addr)
        self.remember_addr(entry.addr)
        how = f"joined the ring through {bootstrap.addr}" if bootstrap else "started a new ring"
        text = f"node #{index} at {entry.addr} (id {ids.short(node.id)}), {was} before, {how}"
        if not self.answering or self.client is None:
            new = await self._reattach([entry.addr])
            if new is not None:
                text += f"; now attached to {new}"
        return text

    async def _nodes_kill(self, index: int) -> str:
        assert self.embedded is not None
        entry = self._embedded_entry(index)
        if entry.state != "up":
            raise CommandError(f"embedded node #{index} has already {entry.state}")
        was_attached = entry.addr == self.attached_text
        prefer: list[str] = []
        if was_attached:
            with contextlib.suppress(DhtError, TimeoutError):
                st = await asyncio.wait_for(self._client().status(), PROBE_TIMEOUT)
                prefer = [p["addr"] for p in st["successors"]]
        await entry.node.stop()
        entry.state = "killed"
        self.dead.add(entry.addr)
        text = f"killed node #{index} at {entry.addr} without warning; the ring repairs itself"
        if was_attached:
            new = await self._reattach(prefer)
            text += f"; now attached to {new}" if new else "; no embedded node is left"
        return text

    async def _nodes_list(self) -> str:
        assert self.embedded is not None
        client = self._client() if self.client is not None else None

        async def counts(e: EmbeddedNode) -> tuple[int | None, int | None]:
            if e.state != "up" or client is None:
                return None, None
            try:
                st = await asyncio.wait_for(client.node_status(e.node.addr), PROBE_TIMEOUT)
            except (DhtError, TimeoutError):
                return None, None
            return st["store"]["primary"], st["store"]["replica"]

        found = await asyncio.gather(*(counts(e) for e in self.embedded))
        rows = [
            render.NodeRow(
                index=e.index,
                addr=e.addr,
                node_id=ids.to_hex(e.node.id),
                state=e.state,
                attached=e.addr == self.attached_text,
                primary=primary,
                replica=replica,
            )
            for e, (primary, replica) in zip(self.embedded, found, strict=True)
        ]
        return "\n".join(render.nodes_lines(rows))

    async def _whoami(self, cmd: Command) -> str:
        client = self._client()
        return "\n".join(
            [
                "client   this shell: a udpdht client (no id of its own: it only asks)",
                f"attached {self.attached_text} (node {(self.node_id or '?')[:8]})"
                + ("" if self.answering else ", not answering"),
                f"socket   {format_addr(client.endpoint.addr)}   (where the node's answers come)",
            ]
        )

    # --- on a kademlia network (attach kad://H:P) ----------------------------------------------

    def _kad_target(self, cmd: Command, kad: KadClient) -> Address:
        if cmd.addr is None:
            return kad.bootstrap_addr
        return (cmd.addr[0], cmd.addr[1])

    async def _kad_get(self, cmd: Command) -> str:
        assert cmd.key is not None
        kad = self._kad()
        try:
            value, _ = await kad.get(cmd.key)
        finally:
            self._note_kad(kad)
        self.remember_key(cmd.key)
        return render.value_text(value)

    async def _kad_put(self, cmd: Command) -> str:
        assert cmd.key is not None
        kad = self._kad()
        try:
            result = await kad.put(cmd.key, cmd.value)
        except NotSent as exc:  # refused before sending: the reason
            raise CommandError(f"not sent: {exc}") from None
        finally:
            self._note_kad(kad)
        self.remember_key(cmd.key)
        return render_kad.put_text(cmd.key, result)

    async def _kad_lookup(self, cmd: Command) -> str:
        assert cmd.key is not None
        kad = self._kad()
        from udpdht.ids import digest

        trace = await kad.lookup(digest(cmd.key), method="find_value", stop_at_value=False)
        self._note_kad(kad)
        self.remember_key(cmd.key)
        if self.format != "table":
            return formats.as_text(render_kad.lookup_object(cmd.key, trace), self.format)
        return "\n".join(render_kad.lookup_lines(cmd.key, trace))

    async def _kad_findnode(self, cmd: Command) -> str:
        assert cmd.target is not None
        kad = self._kad()
        trace = await kad.find_node(cmd.target)
        self._note_kad(kad)
        if self.format != "table":
            return formats.as_text(trace.info(), self.format)
        return "\n".join(render_kad.findnode_lines(trace))

    async def _kad_ping(self, cmd: Command) -> str:
        kad = self._kad()
        target = await resolve(self._kad_target(cmd, kad))
        text = format_addr(target)
        try:
            node, rtt = await kad.ping_node(target)
        except DhtError:
            self.dead.add(text)
            raise
        self.dead.discard(text)
        self._note_kad(kad)
        if target == kad.bootstrap_addr:
            self.last_rtt = rtt
        return render_kad.ping_text(node, rtt)

    async def _kad_routing(self, cmd: Command) -> str:
        kad = self._kad()
        if cmd.addr is None:
            return "\n".join(render_kad.routing_lines(kad.id, kad.table))
        probe = await kad.probe(await resolve(self._kad_target(cmd, kad)))
        self._note_kad(kad)
        return "\n".join(render_kad.probe_lines(probe))

    async def _kad_whoami(self, cmd: Command) -> str:
        kad = self._kad()
        try:
            seen = format_addr(await kad.stun())
            addr = f"{seen}   (as {format_addr(kad.bootstrap_addr)} sees it: kademlia's stun)"
        except DhtError as exc:
            bound = format_addr(kad.addr) if kad.addr else "-"
            addr = f"{bound} (bound; stun failed: {in_words(exc, hint=False)})"
        kept = kad.identity.path if kad.identity is not None else None
        lines = render_kad.whoami_lines(
            kad.id, addr, self.attached_text, len(kad.table), len(kad.local), kept=kept
        )
        return "\n".join(lines)
