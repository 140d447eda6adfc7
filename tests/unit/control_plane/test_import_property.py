"""Issue 12: random YAML/JSON shapes fed to the AsyncAPI import parser answer a 400/413 error
or an API body, never anything else, and never take longer than the budget."""

from __future__ import annotations

import json
import time
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.importing import parse_import
from control_plane.schemas import ApiBody
from wsgate_common.documents import Budget, DocumentError

_KEYS = st.sampled_from(
    [
        "asyncapi",
        "info",
        "title",
        "version",
        "description",
        "channels",
        "subscribe",
        "publish",
        "x-scopes",
        "x-auth-type",
        "x-uri-mapping",
        "x-throttling-tier",
        "servers",
        "production",
        "sandbox",
        "url",
        "protocol",
        "components",
        "securitySchemes",
        "type",
        "oauth2",
        "flows",
        "implicit",
        "scopes",
        "x-scopes-bindings",
        "/t",
        "/a/{b}",
    ]
) | st.text(max_size=8)
_scalars = st.none() | st.booleans() | st.integers() | st.sampled_from(["2.0.0", "oauth2"])
_shapes = st.recursive(
    _scalars | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=6),
    max_leaves=40,
)
_BASE: dict[str, Any] = {"asyncapi": "2.0.0", "info": {"title": "T", "version": "1"}}


@settings(max_examples=200, deadline=None)
@given(
    doc=_shapes,
    merge=st.booleans(),
    as_json=st.booleans(),
    properties=st.none() | st.just('{"context": "/p"}') | st.text(max_size=10),
)
def test_random_documents_answer_an_error_or_a_body(
    doc: Any, merge: bool, as_json: bool, properties: str | None
) -> None:
    if merge and isinstance(doc, dict):
        doc = {**_BASE, **doc}
    content = (json.dumps(doc) if as_json else yaml.safe_dump(doc)).encode()
    started = time.monotonic()
    try:
        body = parse_import(content, properties, Budget(max_seconds=1))
    except DocumentError as exc:
        assert exc.too_large
    else:
        # the body, or the message of a 400 answer
        assert isinstance(body, ApiBody) or 0 < len(body) < 3000, body
    assert time.monotonic() - started < 2
