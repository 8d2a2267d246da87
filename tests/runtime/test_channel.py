"""The worker control channel carries messages longer than one datagram."""

from __future__ import annotations

import threading

from workbench.runtime.worker import PACKET, Channel


def test_a_message_whose_last_part_is_short_arrives_whole() -> None:
    front, back = Channel.pair()
    other = Channel(back)
    message = ("outputs", b"x" * (2 * PACKET + 5))  # two full parts and a short one
    sender = threading.Thread(target=other.send, args=(message,))
    sender.start()
    try:
        assert front.recv() == message
    finally:
        sender.join(10)
        front.close()
        other.close()
