"""Requests to a session's owner node, over the bus, with a reply.

Only the owner holds a live session's media, clock and pipeline, so ending it, feeding it
telemetry, asking for its live risk or handing it a candidate's reconnect must happen
there. A node sends ``{"type": "control", action, session_id, request_id, args,
from_node}`` on ``node:<owner>`` and waits for ``{"type": "reply", request_id, ok,
result, error}`` on ``reply:<itself>``. A request to this node itself is a plain call.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from proctor.bus import EventBus, Message, Subscription, node_topic, reply_topic
from proctor.errors import ServiceError
from proctor.tasks import BackgroundTasks

log = logging.getLogger("proctor.control")

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class OwnerUnavailable(ServiceError):
    def __init__(self, node_id: str, action: str) -> None:
        super().__init__(503, "owner_unavailable",
                         f"the node holding this session ({node_id}) did not answer "
                         f"'{action}' in time; try again shortly",
                         headers={"Retry-After": "5"})


class ControlRouter:
    def __init__(self, bus: EventBus, node_id: str, timeout_seconds: float) -> None:
        self._bus = bus
        self.node_id = node_id
        self._timeout = timeout_seconds
        self._handlers: dict[str, Handler] = {}
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._subscriptions: list[Subscription] = []
        self._tasks = BackgroundTasks(f"node {node_id}")

    def handle(self, action: str, handler: Handler) -> None:
        """Serve ``action`` for sessions this node owns."""
        self._handlers[action] = handler

    async def start(self) -> None:
        requests = await self._bus.subscribe([node_topic(self.node_id)])
        replies = await self._bus.subscribe([reply_topic(self.node_id)])
        self._subscriptions = [requests, replies]
        self._tasks.spawn(self._serve(requests), "control-requests")
        self._tasks.spawn(self._collect(replies), "control-replies")

    async def close(self) -> None:
        for subscription in self._subscriptions:
            subscription.close()
        await self._tasks.stop()
        for future in self._pending.values():
            future.cancel()

    async def request(self, node_id: str, action: str, session_id: str,
                      args: dict[str, Any] | None = None,
                      timeout_seconds: float | None = None) -> dict[str, Any]:
        """The owner's result, or its refusal re-raised here as the same ServiceError."""
        args = args or {}
        if node_id == self.node_id:
            return await self._run(action, session_id, args)
        request_id = uuid.uuid4().hex
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._bus.publish(node_topic(node_id), {
                "type": "control", "action": action, "session_id": session_id,
                "request_id": request_id, "args": args, "from_node": self.node_id})
            reply = await asyncio.wait_for(future, timeout_seconds or self._timeout)
        except TimeoutError as exc:
            raise OwnerUnavailable(node_id, action) from exc
        finally:
            self._pending.pop(request_id, None)
        if not reply.get("ok"):
            refusal = reply.get("result") or {}
            raise ServiceError(int(refusal.get("status", 502)),
                               str(refusal.get("code", "owner_error")),
                               str(reply.get("error") or "the owner node refused"),
                               headers=refusal.get("headers"))
        return dict(reply.get("result") or {})

    async def _run(self, action: str, session_id: str, args: dict[str, Any]) -> dict[str, Any]:
        handler = self._handlers.get(action)
        if handler is None:
            raise ServiceError(400, "unknown_action", f"no node action {action!r}")
        return await handler(session_id, args)

    async def _serve(self, requests: Subscription) -> None:
        async for message in requests:
            if message.get("type") == "control":
                self._tasks.spawn(self._answer(message), f"control-{message.get('action')}")

    async def _answer(self, message: Message) -> None:
        reply: Message = {"type": "reply", "request_id": message.get("request_id"),
                          "ok": True, "result": None, "error": None}
        try:
            reply["result"] = await self._run(str(message.get("action")),
                                              str(message.get("session_id")),
                                              dict(message.get("args") or {}))
        except ServiceError as exc:
            reply.update(ok=False, error=exc.message, result={
                "status": exc.status, "code": exc.code, "headers": exc.headers})
        except Exception as exc:
            log.exception("control %s for session %s failed", message.get("action"),
                          message.get("session_id"))
            reply.update(ok=False, error=f"the owner node failed: {exc}")
        origin = message.get("from_node")
        if isinstance(origin, str):
            await self._bus.publish(reply_topic(origin), reply)

    async def _collect(self, replies: Subscription) -> None:
        async for message in replies:
            future = self._pending.get(str(message.get("request_id")))
            if future is not None and not future.done():
                future.set_result(message)
