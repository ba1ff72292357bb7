"""The delivery worker: one per node, sending the deployment's due deliveries.

It claims due deliveries with a lease (so no other node sends them meanwhile), posts
each, signed, to its webhook's URL, and records the attempt and the delivery's next
state in one store call. A 2xx is success; anything else is retried with exponential
backoff until ``webhooks.give_up_after_seconds`` after the event, then marked failed.
Every node runs one and any node may send any delivery: a node that stops mid-retry
leaves the delivery pending (its lease released, or lapsing), and another node, or this
one restarted, sends it when it is due.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from contextlib import suppress
from dataclasses import replace
from datetime import datetime

import aiohttp
from yarl import URL

from proctor.config import WebhooksConfig
from proctor.crypto import SealError, TextCipher
from proctor.flags.model import new_id, utc_now_iso
from proctor.outbound.addresses import AddressPolicy, AddressRefused, GuardedResolver
from proctor.outbound.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, signature_header
from proctor.outbound.webhooks import DELIVERED, FAILED, opened
from proctor.store.base import (
    AttemptRecord,
    DeliveryRecord,
    Store,
    StoreUnavailable,
    WebhookRecord,
)

log = logging.getLogger("proctor.webhooks")

USER_AGENT = "proctor-webhooks/1"
ERROR_BODY_CHARS = 200  # of a refusing receiver's answer, kept in the attempt's error
MAX_DOUBLINGS = 40  # beyond this the cap has long applied; keeps 2**n small
RETRY_WAKE_SLACK_SECONDS = 0.005  # a retry's wake-up comes this much after it is due


def retry_delay(attempts: int, config: WebhooksConfig) -> float:
    """The wait after the ``attempts``-th failed attempt: initial, doubling, capped."""
    doublings = min(max(attempts - 1, 0), MAX_DOUBLINGS)
    return float(min(config.retry_initial_seconds * 2 ** doublings, config.retry_max_seconds))


def created_epoch(delivery: DeliveryRecord) -> float:
    return datetime.fromisoformat(delivery.created_at.replace("Z", "+00:00")).timestamp()


def next_state(delivery: DeliveryRecord, status_code: int | None, error: str | None,
               config: WebhooksConfig, now: float) -> DeliveryRecord:
    """The delivery after one attempt: delivered, pending a retry, or failed (given up)."""
    tried = replace(delivery, attempts=delivery.attempts + 1, last_status_code=status_code,
                    last_error=error, lease_until=None)
    if error is None and status_code is not None and 200 <= status_code < 300:
        return replace(tried, status=DELIVERED, delivered_at=utc_now_iso())
    retry_at = now + retry_delay(tried.attempts, config)
    if retry_at > created_epoch(delivery) + config.give_up_after_seconds:
        return replace(tried, status=FAILED)
    return replace(tried, next_attempt_at=retry_at)


class DeliveryWorker:
    """Claims due deliveries and sends up to ``webhooks.concurrency`` at once."""

    def __init__(self, store: Store, config: WebhooksConfig, cipher: TextCipher) -> None:
        self.store = store
        self.config = config
        self.cipher = cipher  # opens the webhooks' sealed secrets
        self.policy = AddressPolicy(config.allowed_networks)
        self._wakeup = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._store_down = False  # log an outage once, not every poll
        self._closing = False
        # Due times of the retries this node scheduled, and the timer for the earliest.
        self._retries: list[float] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0

    def wake(self) -> None:
        """Look for due deliveries now (called right after an emit on this node)."""
        self._wakeup.set()

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_seconds)
        # Every name is resolved through the policy, at each connection (no DNS cache),
        # so a receiver's name that comes to point at a private address is refused then.
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.policy),
                                         use_dns_cache=False)
        self._http = aiohttp.ClientSession(timeout=timeout, connector=connector,
                                           headers={"User-Agent": USER_AGENT})
        self._task = asyncio.create_task(self._run(), name="webhook-deliveries")

    async def close(self) -> None:
        """Stop claiming; let the attempts in flight finish (each is bounded by the
        timeout); cancel any left, whose leases then lapse for another node to retry."""
        # Not a cancel: one caught between its claim and its sends would strand what it
        # claimed until the leases lapse. The loop ends after its current round.
        self._closing = True
        self.wake()
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            await self._task
            self._task = None
        if self._sending:
            _, left = await asyncio.wait(self._sending, timeout=self.config.timeout_seconds + 1)
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    # The loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            # Cleared before claiming, so an emit during the claim still wakes the wait.
            self._wakeup.clear()
            try:
                await self._claim_and_send()
            except Exception:  # the worker must outlive any one bad round
                log.exception("webhooks: delivery round failed")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.config.poll_seconds)

    async def _claim_and_send(self) -> None:
        # Only as many as can be sent now: a claimed delivery waiting here would burn
        # its lease. When all are taken, a finishing attempt wakes the loop.
        free = self.config.concurrency - len(self._sending)
        if free <= 0:
            return
        try:
            claimed = await self.store.claim_due_deliveries(time.time(),
                                                            self.config.lease_seconds, free)
        except StoreUnavailable as exc:
            if not self._store_down:
                log.error("webhooks: store unavailable, deliveries wait: %s", exc)
            self._store_down = True
            return
        self._store_down = False
        for delivery in claimed:
            task = asyncio.create_task(self._attempt(delivery))
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self.wake()  # a slot is free: more may be due

    def _wake_at(self, due: float) -> None:
        """Wake the loop when a retry this node scheduled is due, rather than at the
        next poll after it (other nodes' retries are still found by polling)."""
        if self._closing:
            return  # whoever runs next finds it due in the store
        heapq.heappush(self._retries, due)
        self._arm()

    def _arm(self) -> None:
        if not self._retries:
            return
        earliest = self._retries[0]
        if self._timer is not None:
            if self._timer_due <= earliest:
                return
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_due = earliest
        # A hair late: a timer may fire a little early, before the retry is due.
        delay = max(0.0, earliest - time.time()) + RETRY_WAKE_SLACK_SECONDS
        self._timer = loop.call_at(loop.time() + delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        now = time.time()
        while self._retries and self._retries[0] <= now + RETRY_WAKE_SLACK_SECONDS:
            heapq.heappop(self._retries)
        self.wake()
        self._arm()

    # One attempt --------------------------------------------------------------------

    async def _attempt(self, delivery: DeliveryRecord) -> None:
        try:
            webhook = await self.store.get_webhook(delivery.webhook_id)
            if webhook is None:
                return  # deleted meanwhile, with its deliveries
            at, started = utc_now_iso(), time.monotonic()
            if webhook.active:
                status_code, error = await self._open_and_post(webhook, delivery)
            else:
                status_code, error = None, "the webhook is inactive"
            attempt = AttemptRecord(attempt_id=new_id(), delivery_id=delivery.delivery_id,
                                    at=at, status_code=status_code, error=error,
                                    duration_ms=round((time.monotonic() - started) * 1000, 1))
            state = next_state(delivery, status_code, error, self.config, time.time())
            if not webhook.active:
                state = replace(state, status=FAILED)
            await self.store.finish_attempt(state, attempt)
            _log_outcome(state, attempt)
            if state.status not in (DELIVERED, FAILED):
                self._wake_at(state.next_attempt_at)
        except StoreUnavailable as exc:
            # The lease lapses and the delivery is tried again: at least once.
            log.error("webhooks: could not record delivery %s: %s", delivery.delivery_id,
                      exc)
        except Exception:  # a task's error would otherwise vanish unseen
            log.exception("webhooks: delivery %s failed", delivery.delivery_id)

    async def _open_and_post(self, webhook: WebhookRecord,
                             delivery: DeliveryRecord) -> tuple[int | None, str | None]:
        try:
            webhook = opened(webhook, self.cipher)
        except SealError as exc:
            return None, f"not sent: the webhook's secret: {exc}"
        return await self._post(webhook, delivery)

    async def _post(self, webhook: WebhookRecord,
                    delivery: DeliveryRecord) -> tuple[int | None, str | None]:
        """POST the signed body; (status code, error): error None means a 2xx."""
        assert self._http is not None, "start() first"
        body = delivery.body.encode()
        headers = {"Content-Type": "application/json", EVENT_ID_HEADER: delivery.event_id,
                   SIGNATURE_HEADER: signature_header(webhook.secret, body)}
        try:
            # Names are checked by the resolver; an address in the URL never reaches it.
            self.policy.check_literal(URL(webhook.url).host or "")
            # No redirects: the signature is for this URL's receiver, and a 3xx is
            # more often a misconfigured URL than a move.
            async with self._http.post(webhook.url, data=body, headers=headers,
                                       allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return response.status, None
                answer = await response.content.read(ERROR_BODY_CHARS)
                text = answer.decode(errors="replace").strip()
                return response.status, f"HTTP {response.status}" + (f": {text}" if text
                                                                      else "")
        except TimeoutError:
            return None, f"no answer within {self.config.timeout_seconds:g} s"
        except AddressRefused as exc:
            return None, f"not sent: {exc}"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefused):  # from the resolver
                return None, f"not sent: {exc.os_error}"
            return None, f"{type(exc).__name__}: {exc}"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}"


def _log_outcome(state: DeliveryRecord, attempt: AttemptRecord) -> None:
    if state.status == DELIVERED:
        log.debug("webhooks: %s %s delivered (attempt %d)", state.type, state.event_id,
                  state.attempts)
    elif state.status == FAILED:
        log.warning("webhooks: gave up on %s %s after %d attempts: %s", state.type,
                    state.event_id, state.attempts, attempt.error)
    else:
        log.info("webhooks: %s %s attempt %d failed (%s); retry at %.0f", state.type,
                 state.event_id, state.attempts, attempt.error, state.next_attempt_at)
