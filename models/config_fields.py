"""Config fields added after models were stored, and what a stored model that lacks one had instead.

A stored model records its LearnerConfig (with its NetworkConfig and MemoryConfig). A field this
code has and the record lacks means older code trained the model, and this code's default for that
field may build another network around the stored weights or compute something else with them: such
a model is refused (models/learners.py `stored_settings_problem`). A field declared with
`added_field(default, before=value)` says that `value` reproduces exactly what the code did before
the field existed (same parameters, same predictions: checked against a model the older commit
trained, docs/operations.md "Adding a config field"); a record that lacks it is read with `value`.
"""

from __future__ import annotations

from dataclasses import Field, field, fields
from typing import Any

# The metadata key of a field's value before it existed.
BEHAVIOUR_BEFORE = "behaviour_before"


def added_field(default: Any, *, before: Any) -> Any:
    """A dataclass field whose value `before` reproduces what the code did before the field was added
    (the current behaviour is `default`): a stored model's settings that lack it are read with `before`."""
    return field(default=default, metadata={BEHAVIOUR_BEFORE: before})


def has_value_before(spec: Field) -> bool:
    """Whether the field declares its value before it existed (`added_field`)."""
    return BEHAVIOUR_BEFORE in spec.metadata


def values_before(kind: type, stored: dict) -> dict[str, Any]:
    """The declared values before they existed of the fields of dataclass `kind` that `stored` (a record
    of its values, as `dataclasses.asdict` wrote them) lacks; a lacking field without a declaration is
    not in it (the caller refuses the record)."""
    return {spec.name: spec.metadata[BEHAVIOUR_BEFORE] for spec in fields(kind)
            if spec.name not in stored and has_value_before(spec)}
