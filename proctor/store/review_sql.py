"""Reviews, decisions, breaks and the audit: the Store's queries for them, on both backends."""

from __future__ import annotations

from proctor.store.sql_base import SqlBase


class ReviewQueries(SqlBase):
    """Mixed into :class:`~proctor.store.sql.SqlStore`."""
