"""Which rules close which connections, ordered by the enforcer's data version (router.live),
with explicit times and no event loop.

The rules stream and the Check answers travel separately: a "subscription blocked" rule can
reach the router after the subscription was unblocked and a new handshake allowed (seen in CI:
the unblocked application got its 101, then a 1008 "subscription blocked"). The decision's data
version, announced on the stream after the rules that led to it, orders the two.
"""

from __future__ import annotations

from router.live import PENDING_GRACE, LiveConnections
from router.registry import Identity
from wsgate_proto import enforcer_pb2

APP, API = "app-1", "api-1"
WHO = Identity.of("jti-1", APP, API, "PRODUCTION")
BLOCKED = enforcer_pb2.ConnectionRule(
    application_id=APP, api_id=API, close_code=1008, reason="subscription blocked"
)


def test_a_block_rule_older_than_the_unblock_decision_does_not_doom_the_new_connection() -> None:
    live = LiveConnections()
    live.announce("v1", now=1.0)  # the subscription is active
    checked_at = 10.0  # after the unblock: the enforcer decides at v3
    live.apply_rule(BLOCKED, now=10.05)  # v1 -> v2 (blocked), late on the stream
    live.announce("v2", now=10.06)
    conn = live.begin(WHO, checked_at, "sub-1", "v3", now=10.07)  # v2 -> v3 (unblocked)
    assert conn.doom is None
    live.announce("v3", now=10.08)
    assert live.settle(now=20.0) == 0
    assert conn.doom is None


def test_a_block_rule_still_in_flight_for_a_live_connection_is_held_then_dropped() -> None:
    live = LiveConnections()
    live.announce("v1", now=1.0)
    conn = live.begin(WHO, 10.0, "sub-1", "v3", now=10.01)  # decided after block + unblock
    live.apply_rule(BLOCKED, now=10.05)  # the block (v1 -> v2) arrives after
    assert conn.doom is None
    live.announce("v2", now=10.06)
    live.announce("v3", now=10.07)
    assert live.settle(now=10.07 + 2 * PENDING_GRACE) == 0
    assert conn.doom is None


def test_a_rule_after_the_decisions_version_dooms_a_handshake_in_flight() -> None:
    """The race the rule memory exists for: allowed at v1, blocked while the backend
    handshake runs."""
    live = LiveConnections()
    live.announce("v1", now=1.0)
    live.apply_rule(BLOCKED, now=10.05)  # v1 -> v2, after the Check was answered at v1
    conn = live.begin(WHO, 10.0, "sub-1", "v1", now=10.1)
    assert conn.doom is not None
    assert conn.doom[:2] == (1008, "subscription blocked")


def test_a_rule_after_the_decisions_version_closes_the_live_connection() -> None:
    live = LiveConnections()
    live.announce("v1", now=1.0)
    conn = live.begin(WHO, 10.0, "sub-1", "v1", now=10.01)
    live.apply_rule(BLOCKED, now=10.5)
    assert conn.doom is not None  # no relay yet: closed as soon as it starts


def test_rules_held_for_a_version_that_never_comes_apply_after_the_grace() -> None:
    """Another enforcer answered the Check at a version this stream never announces: the
    held rules close the connection after all (late rather than never)."""
    live = LiveConnections()
    live.announce("v1", now=1.0)
    conn = live.begin(WHO, 10.0, "sub-1", "other", now=10.01)
    live.apply_rule(BLOCKED, now=10.05)
    live.announce("v2", now=10.06)
    assert conn.doom is None
    live.settle(now=10.01 + PENDING_GRACE)
    assert conn.doom is not None
    assert not live._waiting


def test_without_a_version_the_check_time_decides_as_before() -> None:
    live = LiveConnections()
    live.apply_rule(BLOCKED, now=5.0)  # before the Check was sent: known to the decision
    assert live.begin(WHO, 10.0, "sub-1", now=10.1).doom is None
    live.apply_rule(BLOCKED, now=10.05)
    assert live.begin(WHO, 10.0, "sub-1", now=10.1).doom is not None


def test_ending_a_waiting_connection_forgets_it() -> None:
    live = LiveConnections()
    conn = live.begin(WHO, 10.0, "sub-1", "v9", now=10.0)
    live.apply_rule(BLOCKED, now=10.05)
    live.end(conn)
    assert not live._waiting
    assert live.settle(now=100.0) == 0


def test_a_rule_received_before_the_check_was_sent_never_dooms_it() -> None:
    """A new handshake after a revocation the router heard of is the enforcer's to judge
    (the test double's enforcer answers at the same version)."""
    live = LiveConnections()
    live.announce("v1", now=1.0)
    live.apply_rule(BLOCKED, now=5.0)
    assert live.begin(WHO, 10.0, "sub-1", "v1", now=10.1).doom is None


def test_reconcile_closes_only_connections_checked_before_its_snapshot() -> None:
    """Reconcile asks about the identities live at its snapshot; a connection whose Check was
    sent after it (e.g. right after an unblock) was decided on a newer state than the answer
    and stays open. Before the fix it was closed with the refusal of the older state."""
    live = LiveConnections()
    live.announce("v1", now=1.0)
    old = live.begin(WHO, 5.0, "sub-1", "v1", now=5.01)
    snapshot_at = 10.0
    new = live.begin(WHO, 10.2, "sub-1", "v1", now=10.21)  # checked while Reconcile ran
    closed = live.close_identity(
        WHO, "sub-1", 1008, "subscription blocked", "reconcile", checked_before=snapshot_at
    )
    assert closed == 0  # no relay yet: doomed, not closed
    assert old.doom is not None and old.doom[:2] == (1008, "subscription blocked")
    assert new.doom is None
    # without a snapshot time (every caller before Reconcile's) each one is closed
    live.close_identity(WHO, "sub-1", 1008, "revoked", "rule")
    assert new.doom is not None
