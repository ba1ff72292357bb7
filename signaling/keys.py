"""Typed keys for what the app shares between handlers (no module globals)."""

from __future__ import annotations

from aiohttp import web

from proctor.config import Config
from proctor.crypto import TextCipher
from proctor.metrics import Metrics
from proctor.sessions import SessionService
from proctor.store.base import Store
from signaling.auth import TokenSigner
from signaling.peers import Peers

CONFIG_KEY = web.AppKey("config", Config)
CONFIG_API_KEYS = web.AppKey("config_api_key_hashes", frozenset)  # hashes of auth.api_keys
STORE_KEY = web.AppKey("store", Store)
METRICS_KEY = web.AppKey("metrics", Metrics)
SIGNER_KEY = web.AppKey("signer", TokenSigner)
SESSIONS_KEY = web.AppKey("sessions", SessionService)
PEERS_KEY = web.AppKey("peers", Peers)
WEBHOOK_CIPHER_KEY = web.AppKey("webhook_cipher", TextCipher)  # seals webhook secrets
