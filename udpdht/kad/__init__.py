"""Interop with the `kademlia` package (2.2.x on rpcudp 5.x), on the wire.

``codec`` is rpcudp's datagram format (pure), ``endpoint`` calls and answers it on a socket of
its own or on a udpdht node's. See docs/kademlia-interop.md.
"""
