"""A refused ComputeStacks pair is not sent again, until ComputeStacks' 4-hour lockout has surely lifted."""

from __future__ import annotations

from cswhmcs import factory

URL = "https://cs.example.net"
PAIR = ("key", "a-secret-value")


def test_a_refused_pair_is_remembered_then_tried_again_after_the_lockout() -> None:
    # Given a memory with a controllable clock
    now = [1000.0]
    memory = factory.RejectedPairs(clock=lambda: now[0])
    # When the pair is refused
    memory.add(URL, PAIR)
    # Then it is blocked during the lockout, also just before it ends
    assert (URL, PAIR) in memory
    now[0] += factory.FORGET_REJECTED_AFTER - 1
    assert (URL, PAIR) in memory
    # And once the lockout has surely lifted it gets one more try
    now[0] += 2
    assert (URL, PAIR) not in memory
    assert factory.FORGET_REJECTED_AFTER > 4 * 3600


def test_another_pair_or_another_computestacks_is_not_blocked() -> None:
    memory = factory.RejectedPairs()
    memory.add(URL, PAIR)
    assert (URL, ("key", "another-secret")) not in memory
    assert ("https://other.example.net", PAIR) not in memory
