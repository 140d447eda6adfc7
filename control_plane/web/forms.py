"""Pure helpers turning validation failures into per-field messages for the form templates."""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import ValidationError

#: The key of errors that belong to no single field (shown above the form).
FORM = "__all__"

FieldErrors = dict[str, list[str]]


def _loc_key(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def from_validation(exc: ValidationError, fields: Mapping[str, str]) -> FieldErrors:
    """``fields`` maps a model location (``"endpointConfig.production_endpoints.url"``, or any
    prefix of it) to the form field that holds it; unmapped errors go to ``FORM``."""
    errors: FieldErrors = {}
    for error in exc.errors():
        loc = _loc_key(tuple(error.get("loc", ())))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        target = FORM
        best = -1
        for model_loc, form_field in fields.items():
            if (loc == model_loc or loc.startswith(model_loc + ".")) and len(model_loc) > best:
                target, best = form_field, len(model_loc)
        if target == FORM:
            named = re.match(r"^([A-Za-z_][\w.\[\]]*): (.*)$", message)
            if named and named.group(1).split("[")[0] in fields:
                target, message = fields[named.group(1).split("[")[0]], named.group(2)
        errors.setdefault(target, []).append(message[:1].upper() + message[1:])
    return errors


def from_description(description: str, fields: Mapping[str, str]) -> FieldErrors:
    """A service error (``"name: ..."``, ``"an API with context '/x' ..."``) placed beside the
    field it names, or above the form."""
    named = re.match(r"^([A-Za-z_][\w.]*)(?:\[\d+\])?[\w.]*: (.*)$", description)
    if named and named.group(1) in fields:
        message = named.group(2)
        return {fields[named.group(1)]: [message[:1].upper() + message[1:]]}
    clash = re.match(r"^an API with (name|context) ", description)
    if clash and clash.group(1) in fields:
        return {fields[clash.group(1)]: [description[:1].upper() + description[1:]]}
    return {FORM: [description[:1].upper() + description[1:]]}


def merge(*many: FieldErrors) -> FieldErrors:
    merged: FieldErrors = {}
    for errors in many:
        for key, messages in errors.items():
            merged.setdefault(key, []).extend(messages)
    return merged
