"""The Lua scripts the bridge runs in Redis, one file each in ``lua/``.

Each file starts with a header of ``--`` lines (its KEYS, ARGV, return value and the transition
it performs). The header is not sent to Redis: a script's text is the rest of its file, so a
script sent in full with every call (``EVAL``) carries no comment, and documenting a script does
not change its SHA. The ordered-key scripts call shared functions kept in files of their own,
sent in front of them (:data:`USES`).
"""

from __future__ import annotations

import functools
from importlib import resources

USES: dict[str, tuple[str, ...]] = {
    "enqueue": ("fifo_parts", "fifo_publish", "fifo_append"),
    **dict.fromkeys(("ordered_start", "ordered_retrying", "ordered_park"), ("fifo_parts",)),
    **dict.fromkeys(
        ("ordered_done", "ordered_batch_done", "ordered_release", "ordered_republish"),
        ("fifo_parts", "fifo_publish"),
    ),
}  # fmt: skip
"""The shared functions each script calls, by file name: sent in front of it, in this order."""


@functools.cache
def source(name: str) -> str:
    """The text of ``lua/{name}.lua`` without its header.

    :raises FileNotFoundError: there is no such script.
    """
    text = resources.files(__package__).joinpath("lua", f"{name}.lua").read_text("utf-8")
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if not line.startswith("--")), len(lines))
    return "".join(lines[start:])


def script(name: str) -> str:
    """What is sent to Redis for the script ``name``: the shared functions it uses, then its
    own text (:func:`source`).

    :raises FileNotFoundError: there is no such script.
    """
    return "".join(source(part) for part in (*USES.get(name, ()), name))
