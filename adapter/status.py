"""The adapter's status view: per label and type URL, the version served and what each
connected client took or refused. Pure: built from the cache's versions and the xDS status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapter.xds import Nack, XdsStatus


def _nack(nack: Nack | None) -> dict[str, Any] | None:
    if nack is None:
        return None
    return {"version": nack.version, "error": nack.message, "at": nack.at}


def label_view(
    versions: Mapping[str, Mapping[str, str]], status: XdsStatus
) -> dict[str, dict[str, dict[str, Any]]]:
    """Label -> type URL -> ``{version, clients: [{node, peer, acked, lastNack, current}]}``.

    ``current`` is True when the client holds the version served; a client whose last NACK
    names the version served is listed with it (see :func:`current_nacks`).
    """
    view: dict[str, dict[str, dict[str, Any]]] = {}
    labels = set(versions) | {c.node_id for c in status.clients.values()}
    for label in sorted(labels):
        served = versions.get(label, {})
        types = set(served) | {
            t for c in status.clients.values() if c.node_id == label for t in c.types
        }
        by_type: dict[str, dict[str, Any]] = {}
        for type_url in sorted(types):
            version = served.get(type_url, "")
            clients = []
            for client in status.clients.values():
                state = client.types.get(type_url)
                if client.node_id != label or state is None:
                    continue
                clients.append(
                    {
                        "node": client.node_id,
                        "peer": client.peer,
                        "acked": state.acked_version,
                        "current": state.acked_version == version,
                        "lastNack": _nack(state.last_nack),
                    }
                )
            by_type[type_url] = {"version": version, "clients": clients}
        view[label] = by_type
    return view


def current_nacks(view: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Clients whose last NACK refused the version their label serves now, one row each."""
    rows = []
    for label, by_type in view.items():
        for type_url, entry in by_type.items():
            for client in entry["clients"]:
                nack = client["lastNack"]
                if nack is not None and nack["version"] == entry["version"]:
                    rows.append(
                        {
                            "label": label,
                            "type": type_url,
                            "version": entry["version"],
                            "peer": client["peer"],
                            "acked": client["acked"],
                            "error": nack["error"],
                            "at": nack["at"],
                        }
                    )
    return rows
