"""The AMI banner as a real Asterisk 22 sends it: before the login, in pieces.

Asterisk writes ``Asterisk Call Manager/11.0.0\\r\\n`` as soon as the TCP
connection is accepted (AMI-NOTES: the banner is the protocol version); it can
arrive before the link has set up its session and split anywhere, even between
the ``\\r`` and the ``\\n``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from callcenter.pbx.ami import AmiLink
from tests.fakeami import FakeAmi


@pytest.fixture
async def server() -> AsyncIterator[FakeAmi]:
    fake = FakeAmi()
    await fake.start()
    yield fake
    await fake.close()


def _link(port: int) -> AmiLink:
    return AmiLink("127.0.0.1", port, "hotline", "s3cret", on_event=lambda h, t: None,
                   action_timeout=1.0)


@pytest.mark.parametrize("chunks", [
    [b"Asterisk Call Manager/11.0.0\r", b"\n"],
    [b"Asterisk Call Manager/11.0.0\r\n"],
    [b"Asterisk Call", b" Manager/11.0.0", b"\r", b"\n"],
])
async def test_banner_in_pieces_logs_in_and_logs_the_protocol_version(
        server: FakeAmi, chunks: list[bytes]) -> None:
    server.banner_chunks, server.banner_pause = chunks, 0.02
    link = _link(server.port)
    with capture_logs() as logs:
        await link.connect_once()
    await link.stop()
    (up,) = [e for e in logs if e["event"] == "ami.link_up"]
    assert up["version"] == "11.0.0"
