"""The udpdht node: one RPC endpoint, the ring state, and the handlers peers call."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path
from types import TracebackType
from typing import Any

from . import ids
from .net import Address, Network, UdpNetwork, format_addr
from .rpc import RpcConfig, RpcEndpoint

log = logging.getLogger("udpdht.node")


def peer_info(node_id: int, addr: Address) -> dict[str, Any]:
    """A peer as status JSON shows it."""
    return {"id": ids.to_hex(node_id), "addr": format_addr(addr)}


class Node:
    """A DHT node. ``port=0`` binds an ephemeral port; ``node.addr`` tells which."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        data_dir: str | Path | None = None,
        node_id: int | None = None,
        network: Network | None = None,
        rpc_config: RpcConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._fixed_id = node_id
        self.network: Network = network or UdpNetwork()
        self.rpc_config = rpc_config
        self.rng = rng
        self.id = node_id if node_id is not None else 0
        self.addr: Address = (host, port)
        self._endpoint: RpcEndpoint | None = None
        self._started_at = 0.0

    @property
    def endpoint(self) -> RpcEndpoint:
        if self._endpoint is None:
            raise RuntimeError("node is not started")
        return self._endpoint

    @property
    def running(self) -> bool:
        return self._endpoint is not None and not self._endpoint.closed

    async def start(self) -> None:
        if self._endpoint is not None:
            raise RuntimeError("node already started")
        ep = await RpcEndpoint.bind(
            self.network, (self.host, self.port), config=self.rpc_config, rng=self.rng
        )
        self._endpoint = ep
        self.addr = ep.addr
        if self._fixed_id is None:
            self.id = ids.node_id_for(*self.addr)
        self._started_at = asyncio.get_running_loop().time()
        ep.register("ping", self._rpc_ping)
        ep.register("status", self._rpc_status)
        log.info("node %s listening on %s", ids.short(self.id), format_addr(self.addr))

    async def stop(self) -> None:
        ep, self._endpoint = self._endpoint, None
        if ep is not None:
            ep.close()
            await ep.wait_closed()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The status object of INTERFACES.md."""
        ep = self.endpoint
        return {
            "id": ids.to_hex(self.id),
            "addr": format_addr(self.addr),
            "uptime_s": round(asyncio.get_running_loop().time() - self._started_at, 3),
            "predecessor": None,
            "successors": [],
            "predecessors": [],
            "fingers": [],
            "store": {"primary": 0, "replica": 0, "bytes": 0},
            "rpc": ep.stats.as_dict(),
        }

    # --- handlers ------------------------------------------------------------------------------

    def _rpc_ping(self, args: dict[str, Any], peer: Address) -> dict[str, Any]:
        return {"id": ids.to_bytes(self.id)}

    def _rpc_status(self, args: dict[str, Any], peer: Address) -> dict[str, Any]:
        return self.status()
