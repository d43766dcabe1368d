"""The operator console: ``python -m bridge console``, a small server-rendered web app over the
operations of :mod:`bridge.ops` (the ``[console]`` extra: Starlette, Jinja2, uvicorn).

Pure parts: :mod:`~bridge.console.auth` (passwords, roles, CSRF tokens) and
:mod:`~bridge.console.views` (what a page shows, from the status document and DLT records).
I/O at the edge: :mod:`~bridge.console.dlt_reader` (pages of a DLT, by Kafka offsets),
:mod:`~bridge.console.audit` (the audit log, in Redis), :mod:`~bridge.console.guards` (login,
CSRF and role checks) and :mod:`~bridge.console.app` (the web app).
"""
