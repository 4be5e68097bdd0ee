"""The monitor's capabilities negotiation: an event that arrives before the
qmp_capabilities return (QEMU leaves negotiation mode inside the command, so
another thread's event can overtake the reply) is recorded and skipped, not
taken for the reply; an error reply still fails the negotiation."""
import asyncio

import pytest
from qemu.qmp.message import Message
from qemu.qmp.models import Greeting
from qemu.qmp.qmp_client import NegotiationError

from harness.qemu.qmp import _RecordingClient

GREETING = {"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 2}, "package": ""},
                    "capabilities": ["oob"]}}
EVENT = {"event": "MIGRATION", "data": {"status": "active"}, "timestamp": {"seconds": 1, "microseconds": 2}}


def _negotiate(replies: list) -> tuple[list, list]:
    """Run the client's _negotiate against scripted replies; (sent, events seen)."""
    events, sent = [], []
    client = _RecordingClient("t", None, events.append)
    client._greeting = Greeting(Message(GREETING))
    queue = list(replies)

    async def send(msg):
        sent.append(dict(msg))

    async def recv():
        return client._cb_inbound(Message(queue.pop(0)))

    client._send, client._recv = send, recv
    asyncio.run(client._negotiate())
    return sent, events


def test_an_event_before_the_capabilities_return_is_kept():
    sent, events = _negotiate([EVENT, {"return": {}}])
    assert sent[0]["execute"] == "qmp_capabilities" and sent[0]["arguments"] == {"enable": ["oob"]}
    assert [e.name for e in events] == ["MIGRATION"]


def test_a_plain_negotiation_sees_no_event():
    _, events = _negotiate([{"return": {}}])
    assert events == []


def test_an_error_reply_fails_the_negotiation():
    with pytest.raises(NegotiationError):
        _negotiate([{"error": {"class": "GenericError", "desc": "no"}}])
