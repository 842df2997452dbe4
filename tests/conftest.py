import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Test helpers (helpers.py) live beside the tests; make them importable.
sys.path.insert(0, str(Path(__file__).parent))

from helpers import ENV

# What the tests run in this process (a Session, the kad:// client's identity, a node's
# default data dir) writes under the sandbox too, never under the real home directory, as the
# processes they start do (helpers.ENV).
os.environ["XDG_DATA_HOME"] = ENV["XDG_DATA_HOME"]
os.environ["XDG_STATE_HOME"] = ENV["XDG_STATE_HOME"]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A UDP port on 127.0.0.1 that this test binds and never answers: nothing else can
    answer there (a node "not running")."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()
