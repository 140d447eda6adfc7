"""The status view: per label and type, the version served and each client's ACK/NACK."""

from __future__ import annotations

from adapter.metrics import version_counter
from adapter.status import current_nacks, label_view
from adapter.xds import ClientStatus, Nack, TypeStatus, XdsStatus

ROUTE = "type.googleapis.com/wsgate.config.v1.Route"


def _status() -> XdsStatus:
    status = XdsStatus()
    good = ClientStatus(
        1, "Default", "ipv4:127.0.0.1:1", 0.0, {ROUTE: TypeStatus(acked_version="3.e")}
    )
    refused = ClientStatus(
        2,
        "Default",
        "ipv4:127.0.0.1:2",
        0.0,
        {ROUTE: TypeStatus(acked_version="2.e", last_nack=Nack("3.e", "n", "bad route", 5.0))},
    )
    old_nack = ClientStatus(
        3,
        "edge",
        "ipv4:127.0.0.1:3",
        0.0,
        {ROUTE: TypeStatus(acked_version="7.e", last_nack=Nack("6.e", "n", "older", 1.0))},
    )
    status.clients = {1: good, 2: refused, 3: old_nack}
    return status


def test_view_lists_every_client_with_acked_version_and_last_nack() -> None:
    view = label_view({"Default": {ROUTE: "3.e"}, "edge": {ROUTE: "7.e"}}, _status())
    default = view["Default"][ROUTE]
    assert default["version"] == "3.e"
    assert [(c["peer"], c["acked"], c["current"]) for c in default["clients"]] == [
        ("ipv4:127.0.0.1:1", "3.e", True),
        ("ipv4:127.0.0.1:2", "2.e", False),
    ]
    assert default["clients"][1]["lastNack"] == {"version": "3.e", "error": "bad route", "at": 5.0}
    assert view["edge"][ROUTE]["clients"][0]["lastNack"]["version"] == "6.e"


def test_only_nacks_of_the_version_served_now_are_current() -> None:
    view = label_view({"Default": {ROUTE: "3.e"}, "edge": {ROUTE: "7.e"}}, _status())
    rows = current_nacks(view)
    assert [(r["label"], r["peer"], r["version"], r["acked"]) for r in rows] == [
        ("Default", "ipv4:127.0.0.1:2", "3.e", "2.e")
    ]
    assert rows[0]["error"] == "bad route"


def test_a_label_with_clients_but_no_snapshot_yet_is_shown() -> None:
    view = label_view({}, _status())
    assert view["edge"][ROUTE]["version"] == ""


def test_version_counter_reads_the_counter_part() -> None:
    assert version_counter("12.ab34cd56") == 12.0
    assert version_counter("") == 0.0
    assert version_counter("x.y") == 0.0
