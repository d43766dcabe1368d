"""Hypothesis strategies shared by the hostile-input tests (unit and integration)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st


def json_values(max_leaves: int = 20, size: int = 4) -> st.SearchStrategy[Any]:
    """Any JSON value (NaN and infinities included, as ``json.dumps`` writes them)."""
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: (
            st.lists(inner, max_size=size) | st.dictionaries(st.text(), inner, max_size=size)
        ),
        max_leaves=max_leaves,
    )


def json_documents(max_leaves: int = 20, size: int = 4) -> st.SearchStrategy[bytes]:
    """Any JSON value as the UTF-8 bytes of a record value."""
    return json_values(max_leaves, size).map(lambda v: json.dumps(v).encode())


# Header names as kafka-python gives them: str decoded from UTF-8, so never a lone surrogate.
header_names = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
