"""``SyncProctorClient``: the same API for code that does not run an event loop.

It is :class:`~proctor.client.aio.ProctorClient` itself, run on a private event loop
in a background thread: each method hands the async method's coroutine to that loop
and waits for its result, so every call has one implementation, the async one. Calls
from several threads at once are fine (they share the loop and its connections).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from proctor.client.aio import DEFAULT_TIMEOUT_SECONDS, ProctorClient

P = ParamSpec("P")
T = TypeVar("T")


class _LoopThread:
    """An event loop running forever in a daemon thread, until :meth:`stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._stopped = False
        self._thread = threading.Thread(target=self.loop.run_forever,
                                        name="proctor-client-loop", daemon=True)
        self._thread.start()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the loop and wait for it; its exception is raised here."""
        if self._stopped or threading.current_thread() is self._thread:
            work.close()  # never started: no "was never awaited" warning
            raise RuntimeError("the client is closed" if self._stopped else
                               "SyncProctorClient called from its own event loop")
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def _blocking(method: Callable[Concatenate[ProctorClient, P], Coroutine[Any, Any, T]],
              ) -> Callable[Concatenate[SyncProctorClient, P], T]:
    """The blocking form of one of ProctorClient's methods: same arguments, same
    result, same errors."""

    @functools.wraps(method)
    def call(self: SyncProctorClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._loop.run(method(self._client, *args, **kwargs))

    return call


class SyncProctorClient:
    """The Proctor HTTP API, blocking. Use ``with SyncProctorClient(url, key) as
    proctor: ...`` or call :meth:`close` (which stops its thread). The methods are
    :class:`ProctorClient`'s, with the same arguments, results and errors."""

    def __init__(self, base_url: str, credential: str, *,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._client = ProctorClient(base_url, credential, timeout=timeout)
        self._loop = _LoopThread()
        self._owner = True

    @property
    def base_url(self) -> str:
        return self._client.base_url

    def with_credential(self, credential: str) -> SyncProctorClient:
        """A client for the same server with another credential (a proctor token),
        sharing this one's thread and connections; closing this one closes both."""
        derived = SyncProctorClient.__new__(SyncProctorClient)
        derived._client = self._client.with_credential(credential)
        derived._loop = self._loop
        derived._owner = False
        return derived

    def close(self) -> None:
        if self._owner and not self._loop.stopped:
            self._loop.run(self._client.close())
            self._loop.stop()

    def __enter__(self) -> SyncProctorClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    # Sessions
    create_session = _blocking(ProctorClient.create_session)
    get_session = _blocking(ProctorClient.get_session)
    list_sessions = _blocking(ProctorClient.list_sessions)
    end_session = _blocking(ProctorClient.end_session)
    list_flags = _blocking(ProctorClient.list_flags)
    get_report = _blocking(ProctorClient.get_report)
    get_transcript = _blocking(ProctorClient.get_transcript)
    get_audit = _blocking(ProctorClient.get_audit)
    declare_break = _blocking(ProctorClient.declare_break)
    create_proctor_token = _blocking(ProctorClient.create_proctor_token)
    # Review and decision
    review_flag = _blocking(ProctorClient.review_flag)
    decide = _blocking(ProctorClient.decide)
    # Webhooks
    create_webhook = _blocking(ProctorClient.create_webhook)
    list_webhooks = _blocking(ProctorClient.list_webhooks)
    delete_webhook = _blocking(ProctorClient.delete_webhook)
    list_deliveries = _blocking(ProctorClient.list_deliveries)
    # Candidates, nodes, clips
    get_candidate = _blocking(ProctorClient.get_candidate)
    enroll_candidate = _blocking(ProctorClient.enroll_candidate)
    erase_candidate = _blocking(ProctorClient.erase_candidate)
    list_nodes = _blocking(ProctorClient.list_nodes)
    download_clip = _blocking(ProctorClient.download_clip)
    # Interviews
    post_questions = _blocking(ProctorClient.post_questions)
    score_answers = _blocking(ProctorClient.score_answers)
    add_kb_document = _blocking(ProctorClient.add_kb_document)
    search_kb = _blocking(ProctorClient.search_kb)


__all__ = ["SyncProctorClient"]
