"""Webhooks, their deliveries and attempts: the Store's queries for them, on both backends."""

from __future__ import annotations

from proctor.store.sql_base import SqlBase


class WebhookQueries(SqlBase):
    """Mixed into :class:`~proctor.store.sql.SqlStore`."""
