"""An optional LLM that scores an answer, held to the retrieved chunks.

``scoring.llm`` names an OpenAI-compatible server (``POST {url}/v1/chat/completions``
with a strict ``json_schema`` response format) or an Ollama one (``POST {url}/api/chat``
with ``format`` set to the same schema). The model sees the question, the answer and
the retrieved chunks, each with its id, and must answer with :data:`OUTPUT_SCHEMA`:
criteria, each with a score, a reason and the ids of the chunks it rests on.

We never trust the output: it is parsed and validated here (a server may ignore the
schema), and a criterion (a claim) that cites no chunk of those retrieved is dropped
and counted. A timeout, an HTTP error or a malformed answer is retried
``retries`` times, then :class:`LlmFailed` tells the caller to score locally.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from proctor.config import LlmConfig
from proctor.kb.chunking import sentences
from proctor.kb.index import Hit

MAX_CRITERIA = 12
MAX_TEXT = 2000  # characters of a name, reason or quote
MAX_RESPONSE_BYTES = 1_048_576

OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["criteria"],
    "properties": {
        "criteria": {
            "type": "array", "minItems": 1, "maxItems": MAX_CRITERIA,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "score", "reason", "chunk_ids", "quote"],
                "properties": {
                    "name": {"type": "string"},
                    "score": {"type": "number", "minimum": 0, "maximum": 10},
                    "reason": {"type": "string"},
                    "chunk_ids": {"type": "array", "items": {"type": "string"}},
                    "quote": {"type": "string"},
                },
            },
        },
    },
}

SYSTEM_PROMPT = (
    "You score a candidate's spoken interview answer from 0 to 10 against the rubric and "
    "reference excerpts given. Judge only what the excerpts support. Return JSON only, "
    "matching the schema: criteria, each with a name, a score 0-10, a short reason, the "
    "chunk_ids of the excerpts it rests on (at least one, from those given) and a quote "
    "copied word for word from one of them. A criterion without a given chunk id is "
    "discarded."
)


class LlmFailed(RuntimeError):
    """No valid answer from the LLM within its attempts: score locally instead."""


class MalformedOutput(ValueError):
    """The LLM answered, but not with the schema."""


@dataclass(frozen=True)
class Claim:
    name: str
    score: float
    reason: str
    chunk_ids: tuple[str, ...]
    quote: str


@dataclass(frozen=True)
class LlmVerdict:
    claims: list[Claim]  # those citing retrieved chunks only
    dropped: int  # claims that cited none


def build_prompt(question: str, answer: str, hits: Sequence[Hit]) -> str:
    excerpts = "\n\n".join(f"[chunk_id: {h.chunk.chunk_id}] ({h.chunk.kind}"
                           f"{': ' + h.chunk.title if h.chunk.title else ''})\n{h.chunk.text}"
                           for h in hits)
    return (f"Question:\n{question}\n\nCandidate's answer (speech to text):\n{answer}\n\n"
            f"Excerpts:\n{excerpts}")


def request_body(config: LlmConfig, prompt: str) -> dict[str, Any]:
    messages = [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": prompt}]
    if config.api == "ollama":
        return {"model": config.model, "messages": messages, "stream": False,
                "format": OUTPUT_SCHEMA, "options": {"temperature": 0}}
    return {"model": config.model, "messages": messages, "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "answer_score", "strict": True, "schema": OUTPUT_SCHEMA}}}


def endpoint(config: LlmConfig) -> str:
    base = config.url.rstrip("/")
    return f"{base}/api/chat" if config.api == "ollama" else f"{base}/v1/chat/completions"


def message_content(config: LlmConfig, body: Any) -> str:
    """The model's text out of the server's envelope (MalformedOutput when absent)."""
    try:
        if config.api == "ollama":
            content = body["message"]["content"]
        else:
            content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise MalformedOutput(f"no message content in the response: {exc!r}") from exc
    if not isinstance(content, str):
        raise MalformedOutput("the message content is not text")
    return content


def _text(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise MalformedOutput(f"criteria[].{key} must be text of at most {MAX_TEXT} chars")
    return value


def parse_output(content: str) -> list[Claim]:
    """The claims of a schema-valid output; MalformedOutput for anything else."""
    try:
        data = json.loads(content)
    except ValueError as exc:
        raise MalformedOutput(f"not JSON: {exc}") from exc
    if not isinstance(data, dict) or set(data) != {"criteria"}:
        raise MalformedOutput("expected an object with exactly the key 'criteria'")
    items = data["criteria"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_CRITERIA:
        raise MalformedOutput(f"criteria must be a list of 1 to {MAX_CRITERIA}")
    return [_claim(item) for item in items]


def _claim(item: Any) -> Claim:
    required = {"name", "score", "reason", "chunk_ids", "quote"}
    if not isinstance(item, dict) or set(item) != required:
        raise MalformedOutput(f"each criterion must have exactly {sorted(required)}")
    score = item["score"]
    if isinstance(score, bool) or not isinstance(score, int | float) or not (
            math.isfinite(score) and 0 <= score <= 10):
        raise MalformedOutput("criteria[].score must be a number from 0 to 10")
    ids = item["chunk_ids"]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise MalformedOutput("criteria[].chunk_ids must be a list of strings")
    return Claim(_text(item, "name").strip() or "criterion", float(score),
                 _text(item, "reason"), tuple(ids), _text(item, "quote"))


def hold_to(claims: Sequence[Claim], hits: Sequence[Hit]) -> LlmVerdict:
    """Keep the claims whose every cited id is a retrieved chunk (and that cite one)."""
    known = {h.chunk.chunk_id for h in hits}
    kept = [c for c in claims if c.chunk_ids and set(c.chunk_ids) <= known]
    return LlmVerdict(kept, len(claims) - len(kept))


def quote_in(claim: Claim, hit: Hit) -> str:
    """The claim's quote when it is really in the chunk, else the chunk's first sentence."""
    quote = claim.quote.strip()
    if quote and quote.lower() in hit.chunk.text.lower():
        start = hit.chunk.text.lower().index(quote.lower())
        return hit.chunk.text[start:start + len(quote)]
    first = sentences(hit.chunk.text)
    return first[0] if first else hit.chunk.text


class LlmClient:
    """One configured endpoint; :meth:`judge` returns cited claims or raises LlmFailed."""

    def __init__(self, config: LlmConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return f"llm:{self.config.model}"

    async def judge(self, question: str, answer: str, hits: Sequence[Hit]) -> LlmVerdict:
        body = request_body(self.config, build_prompt(question, answer, hits))
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key \
            else {}
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_seconds)
        errors: list[str] = []
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for _ in range(self.config.retries + 1):
                try:
                    claims = await self._attempt(http, body, headers)
                except (aiohttp.ClientError, TimeoutError, MalformedOutput) as exc:
                    errors.append(_describe(exc))
                    continue
                return hold_to(claims, hits)
        raise LlmFailed("; ".join(errors))

    async def _attempt(self, http: aiohttp.ClientSession, body: dict[str, Any],
                       headers: dict[str, str]) -> list[Claim]:
        async with http.post(endpoint(self.config), json=body, headers=headers) as response:
            if response.status != 200:
                raise MalformedOutput(f"HTTP {response.status}")
            raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
        if len(raw) > MAX_RESPONSE_BYTES:
            raise MalformedOutput("the response is over 1 MiB")
        try:
            envelope = json.loads(raw)
        except ValueError as exc:
            raise MalformedOutput(f"the response is not JSON: {exc}") from exc
        return parse_output(message_content(self.config, envelope))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:200]
