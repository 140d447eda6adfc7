"""Issue 12: hostile API projects (YAML bombs, huge files, random shapes) against the parser."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.project import ProjectError, load_zip
from tests.hostile_docs import big_asyncapi, project_zip, yaml_bomb
from wsgate_common.documents import Budget

ENVIRONMENTS_BOMB = (
    b"type: deployment_environments\nx: &a [1,1,1,1,1,1,1,1,1,1]\ny: &b [*a,*a,*a,*a,*a]\n"
    b"data:\n  - deploymentEnvironment: *b\n"
)


@pytest.mark.parametrize("where", ["asyncapi", "api", "environments"])
def test_yaml_bombs_in_any_project_file_are_refused_quickly(where: str) -> None:
    if where == "asyncapi":
        data = project_zip(yaml_bomb())
    elif where == "api":
        data = project_zip(b"asyncapi: 2.0.0\n", api_yaml=yaml_bomb())
    else:
        import io
        import zipfile

        buffer = io.BytesIO(project_zip(b"asyncapi: 2.0.0\n"))
        with zipfile.ZipFile(buffer, "a") as archive:
            archive.writestr("Big-1.0/deployment_environments.yaml", ENVIRONMENTS_BOMB)
        data = buffer.getvalue()
    started = time.monotonic()
    with pytest.raises(ProjectError) as info:
        load_zip(data)
    assert time.monotonic() - started < 1
    assert "alias" in info.value.message and len(str(info.value)) < 300


def test_huge_asyncapi_is_refused_as_too_large_within_the_budget() -> None:
    started = time.monotonic()
    with pytest.raises(ProjectError) as info:
        load_zip(project_zip(big_asyncapi()))
    assert time.monotonic() - started < 3
    assert info.value.too_large and "100000" in info.value.message


def test_long_values_are_clipped_in_errors() -> None:
    api = b"type: api\ndata: {name: A, version: '1', context: /a, type: '" + b"H" * 50_000 + b"'}\n"
    with pytest.raises(ProjectError) as info:
        load_zip(project_zip(b"asyncapi: 2.0.0\n", api_yaml=api))
    assert "data.type" in str(info.value) and len(str(info.value)) < 300


_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
_shapes = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "data",
                    "name",
                    "version",
                    "context",
                    "operations",
                    "target",
                    "verb",
                    "scopes",
                    "scope",
                    "endpointConfig",
                    "production_endpoints",
                    "url",
                    "channels",
                    "subscribe",
                    "publish",
                    "x-scopes",
                    "servers",
                    "asyncapi",
                    "bindings",
                ]
            )
            | st.text(max_size=6),
            children,
            max_size=6,
        )
    ),
    max_leaves=30,
)
_API_BASE: dict[str, Any] = {
    "type": "api",
    "data": {"name": "P", "version": "1", "context": "/p"},
}


@settings(max_examples=150, deadline=None)
@given(api=_shapes, asyncapi=_shapes, as_json=st.booleans(), merge=st.booleans())
def test_random_project_shapes_answer_a_project_error_or_a_definition(
    api: Any, asyncapi: Any, as_json: bool, merge: bool
) -> None:
    if merge and isinstance(api, dict):
        api = {**_API_BASE, **api}
    dump = (lambda v: json.dumps(v).encode()) if as_json else (lambda v: yaml.safe_dump(v).encode())
    data = project_zip(dump(asyncapi), api_yaml=dump(api))
    started = time.monotonic()
    try:
        definition = load_zip(data, budget=Budget(max_seconds=1))
    except ProjectError as exc:
        assert len(str(exc)) < 600
    else:
        assert definition.name
    assert time.monotonic() - started < 2


def test_too_many_operations_are_refused_before_compiling() -> None:
    with pytest.raises(ProjectError) as info:
        load_zip(project_zip(big_asyncapi(1001)))
    assert info.value.too_large and "1000" in info.value.message
    assert len(load_zip(project_zip(big_asyncapi(1000))).operations) == 1000
