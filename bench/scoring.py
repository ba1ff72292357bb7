"""Answer scoring: how often retrieval finds the right chunk, and what scoring costs.

Builds a labelled set in a fresh SQLite store through the real knowledge base
(chunking, MiniLM embeddings, the store's blobs):

* eight interview rubrics (hash tables, HTTP caching, indexes, TCP, garbage collection,
  transactions, rate limiting, password storage), four points each, one paragraph a
  point; the "right chunk" of a query is the chunk that holds its point;
* distractors: the docstrings of a dozen standard-library modules (real technical
  English: sockets, HTTP, JSON, threads, hashing...), a few hundred chunks;
* 32 paraphrase queries, one per point, worded as a candidate or an interviewer would
  say it, not copied from the point; and 8 term queries naming a point's exact terms
  (ETag, B-tree, 429 Retry-After...), where words should win.

Prints recall@1, recall@5 and MRR of the right chunk for the hybrid search (BM25 + vector,
reciprocal-rank fusion) and for BM25 and the vector search alone (per query group and
overall); then the local
scorer's latency per answer (retrieval of rubric and reference, embeddings, scoring),
with each point's query as the answer.

Run from the repository root:

    python -m bench.scoring [--chunk-words 80] [--answers 32]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from proctor.config import AnswersConfig
from proctor.kb.embeddings import shared_embedder
from proctor.kb.index import DocKind, Filters, KnowledgeBase, SearchMode
from proctor.review.answers import Answer, LocalScorer, related, rubric_for
from proctor.store import open_store_from_url
from proctor.store.base import QuestionRecord

TENANT = "bench"
DISTRACTOR_MODULES = ("socket", "http.client", "json", "threading", "hashlib", "collections",
                      "urllib.parse", "asyncio.streams", "sqlite3", "ssl", "email.message",
                      "logging")
MIN_DOC_WORDS = 25

# topic: (question, [(point, query)])
TOPICS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "hash tables": ("How does a hash table deal with collisions?", [
        ("Separate chaining: every bucket holds a linked list of the entries whose keys "
         "hash to it, so colliding keys simply share the bucket.",
         "each slot keeps a list of the keys that landed there"),
        ("Open addressing: all entries live in the array itself; on a collision the table "
         "probes for another free slot, by linear or quadratic probing or double hashing.",
         "look for the next empty position in the array when the spot is taken"),
        ("Load factor: once the table is too full, lookups slow down, so it is resized to "
         "a larger array and every key is rehashed into it.",
         "when it gets crowded you grow it and reinsert everything"),
        ("A good hash function spreads keys uniformly over the buckets; a poor one "
         "clusters them and turns lookups into linear scans.",
         "why the choice of hashing function matters for speed"),
    ]),
    "http caching": ("How does caching work in HTTP?", [
        ("The Cache-Control header with max-age tells a cache how many seconds a response "
         "stays fresh before it must be checked again.",
         "which header says how long a response can be reused"),
        ("Validation: the client sends If-None-Match with the ETag it holds, and the "
         "server answers 304 Not Modified when the resource has not changed.",
         "revalidating with an entity tag and getting a not modified answer"),
        ("Responses marked private may be stored by the browser but never by shared "
         "caches such as proxies or a CDN.",
         "keeping personal pages out of proxy caches"),
        ("The Vary header lists the request headers, such as Accept-Encoding, that select "
         "between stored variants of one URL.",
         "serving gzip and plain versions of the same URL from cache"),
    ]),
    "indexes": ("What is a database index, and why is it useful?", [
        ("An index is a separate sorted structure, usually a B-tree, over one or more "
         "columns of a table.",
         "the balanced tree the database keeps beside the table"),
        ("With an index a query finds matching rows directly instead of scanning the "
         "whole table, turning linear work into logarithmic.",
         "avoiding reading every row to answer a where clause"),
        ("Indexes cost disk space and slow down inserts, updates and deletes, because each "
         "index must be maintained on every write.",
         "the downside for write heavy workloads"),
        ("In a composite index the column order matters: it serves queries that filter on "
         "a leftmost prefix of its columns.",
         "multi column index and which queries can use it"),
    ]),
    "tcp": ("How does TCP deliver data reliably?", [
        ("A connection opens with the three-way handshake: SYN, SYN-ACK, ACK, which also "
         "agrees on the initial sequence numbers.",
         "the syn synack ack exchange at the start"),
        ("The receiver acknowledges the bytes it got; a segment not acknowledged in time "
         "is retransmitted by the sender.",
         "what happens when a packet is lost on the way"),
        ("Flow control: the receive window advertises how much buffer is free, so a fast "
         "sender cannot overrun a slow receiver.",
         "stopping a fast sender from flooding a slow reader"),
        ("Congestion control starts slowly and grows the congestion window until loss, "
         "then backs off: slow start and additive increase, multiplicative decrease.",
         "how the sending rate adapts to a congested network"),
    ]),
    "garbage collection": ("How does garbage collection work?", [
        ("Reference counting frees an object as soon as the last reference to it goes "
         "away, at the cost of a counter update on every assignment.",
         "objects freed the moment nothing points at them"),
        ("Reference cycles never reach a count of zero, so a tracing collector marks what "
         "is reachable from the roots and sweeps the rest.",
         "objects that refer to each other in a loop"),
        ("Generational collectors scan young objects often and old ones rarely, because "
         "most objects die young.",
         "why new allocations are collected more often than long lived ones"),
        ("A stop-the-world collection pauses the program; incremental and concurrent "
         "collectors shorten those pauses.",
         "application freezes while memory is reclaimed"),
    ]),
    "transactions": ("What do ACID transactions guarantee?", [
        ("Atomicity: every statement of a transaction takes effect, or none does; a "
         "failure rolls the whole transaction back.",
         "all or nothing when something fails halfway"),
        ("Isolation levels, from read committed to serializable, decide which effects of "
         "concurrent transactions one can see.",
         "what one transaction sees of another running at the same time"),
        ("Durability: once committed, changes survive a crash, because they are written "
         "to a write-ahead log before the commit returns.",
         "not losing committed data after a power cut"),
        ("Two transactions that each wait for a lock the other holds deadlock; the "
         "database detects it and aborts one of them.",
         "two sessions blocked waiting on each other forever"),
    ]),
    "rate limiting": ("How would you design a rate limiter for an API?", [
        ("A token bucket refills at a steady rate and lets a request through when a token "
         "is left, so it allows short bursts up to the bucket size.",
         "refilling allowance that still permits bursts"),
        ("Fixed windows count requests per clock minute and allow double bursts at the "
         "edges; sliding windows smooth that out.",
         "counting per minute and the problem at the boundary"),
        ("A refused client gets HTTP 429 Too Many Requests with a Retry-After header "
         "saying when to try again.",
         "what status code and header the client receives when throttled"),
        ("Several servers share their counters in a store such as Redis, with atomic "
         "increments and expiring keys.",
         "limiting consistently across many instances behind a load balancer"),
    ]),
    "passwords": ("How should a service store user passwords?", [
        ("Store a salted hash from a slow, memory-hard function such as bcrypt, scrypt or "
         "Argon2, never the password itself.",
         "which algorithm to use for password hashes"),
        ("A unique random salt per user defeats precomputed rainbow tables and makes equal "
         "passwords hash differently.",
         "why every account gets its own random value mixed in"),
        ("Fast hashes like MD5 or SHA-256 are wrong for passwords: attackers try billions "
         "of guesses per second on a GPU.",
         "why a general purpose digest is a bad choice here"),
        ("Compare hashes in constant time so the comparison leaks nothing through timing, "
         "and rehash with stronger parameters at the next login.",
         "timing attacks when checking a login"),
    ]),
}

# Queries by the exact terms of a point (topic, point index, query): where words win.
TERM_QUERIES = [
    ("hash tables", 1, "linear probing double hashing"),
    ("http caching", 1, "ETag If-None-Match 304"),
    ("indexes", 0, "B-tree index"),
    ("tcp", 0, "SYN-ACK handshake"),
    ("garbage collection", 0, "reference counting"),
    ("transactions", 2, "write-ahead log"),
    ("rate limiting", 2, "429 Retry-After"),
    ("passwords", 0, "bcrypt scrypt Argon2"),
]


@dataclass
class Labelled:
    query: str
    point: str
    right: set[str]  # chunk ids holding the point
    question: str
    kind: str = "paraphrase"  # or "terms" (TERM_QUERIES)


def distractor_texts() -> list[str]:
    """Docstrings (of at least MIN_DOC_WORDS words) of the modules, their classes and
    functions: real technical text the queries must not be confused by."""
    texts: list[str] = []
    for name in DISTRACTOR_MODULES:
        module = importlib.import_module(name)
        objects = [module, *(v for _, v in inspect.getmembers(module)
                             if inspect.isclass(v) or inspect.isfunction(v))]
        for obj in objects:
            doc = inspect.getdoc(obj) or ""
            if len(doc.split()) >= MIN_DOC_WORDS and doc not in texts:
                texts.append(doc)
    return texts


async def build(base: KnowledgeBase) -> list[Labelled]:
    labelled: list[Labelled] = []
    for topic, (question, points) in TOPICS.items():
        text = f"{topic.title()}\n\n" + "\n\n".join(p for p, _ in points)
        _, chunks = await base.add(TENANT, DocKind.RUBRIC, text, title=topic)
        for point, query in points:
            right = {c.chunk_id for c in chunks if point in c.text}
            labelled.append(Labelled(query, point, right, question))
        for term_topic, index, query in TERM_QUERIES:
            if term_topic == topic:
                point = points[index][0]
                labelled.append(Labelled(query, point, {c.chunk_id for c in chunks
                                                        if point in c.text}, question, "terms"))
    for doc in distractor_texts():
        await base.add(TENANT, DocKind.REFERENCE, doc, title="stdlib docstring")
    return labelled


async def recall(base: KnowledgeBase, labelled: list[Labelled]) -> list[list[str]]:
    rows = []
    groups = [("paraphrase", [i for i in labelled if i.kind == "paraphrase"]),
              ("terms", [i for i in labelled if i.kind == "terms"]), ("all", labelled)]
    for mode in SearchMode:
        ranks: dict[int, int | None] = {}
        for n, item in enumerate(labelled):
            hits = await base.search(TENANT, item.query, limit=50, mode=mode)
            ids = [h.chunk.chunk_id for h in hits]
            ranks[n] = next((i + 1 for i, c in enumerate(ids) if c in item.right), None)
        for name, items in groups:
            got = [ranks[labelled.index(i)] for i in items]
            at1 = sum(1 for r in got if r == 1) / len(got)
            at5 = sum(1 for r in got if r is not None and r <= 5) / len(got)
            mrr = sum(1 / r for r in got if r is not None) / len(got)
            rows.append([str(mode), f"{name} ({len(got)})", f"{at1:.2f}", f"{at5:.2f}",
                         f"{mrr:.2f}"])
    return rows


async def latency(base: KnowledgeBase, labelled: list[Labelled], count: int) -> list[float]:
    """Milliseconds per answer: what Interviews does for one (retrieve, embed, score)."""
    scorer = LocalScorer(base.embedder)
    took = []
    for item in labelled[:count]:
        started = time.perf_counter()
        vector = (await base.embedder.embed([item.question]))[0]
        rubric = rubric_for(vector, await base.search(
            TENANT, item.question, Filters(DocKind.RUBRIC), 4, query_vector=vector))
        reference = related(vector, await base.search(
            TENANT, f"{item.question} {item.query}", Filters(DocKind.REFERENCE), 4))
        answer = Answer(QuestionRecord("bench", "q", item.question, 0.0), item.point, 0.0, 9.0)
        await scorer.score(answer, rubric, reference)
        took.append((time.perf_counter() - started) * 1000)
    return took


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in rows]
    return "\n".join([line, rule, *body])


async def main(chunk_words: int, answers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store_from_url(f"sqlite:///{Path(tmp) / 'bench.db'}")
        await store.open()
        try:
            embedder = shared_embedder()
            base = KnowledgeBase(store, embedder, chunk_words,
                                 AnswersConfig().max_document_bytes)
            started = time.perf_counter()
            labelled = await build(base)
            chunks = len(await store.list_kb_chunks(TENANT))
            built = time.perf_counter() - started
            print(f"labelled set: {len(labelled)} queries, {len(TOPICS)} rubrics, {chunks} "
                  f"chunks in all (chunk_words {chunk_words}); indexed in {built:.1f} s "
                  f"({built / chunks * 1000:.1f} ms a chunk)\n")
            print(table(["retrieval", "queries", "recall@1", "recall@5", "MRR"],
                        await recall(base, labelled)))
            took = await latency(base, [i for i in labelled if i.kind == "paraphrase"], answers)
            q = statistics.quantiles(took, n=20) if len(took) >= 2 else took * 19
            print()
            print(table(["local scoring, per answer", "answers", "p50 ms", "p95 ms", "max ms"],
                        [[f"retrieval + embeddings + scoring ({chunks} chunks)",
                          str(len(took)), f"{statistics.median(took):.0f}",
                          f"{q[18]:.0f}", f"{max(took):.0f}"]]))
        finally:
            await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk-words", type=int, default=AnswersConfig().chunk_words)
    parser.add_argument("--answers", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.chunk_words, args.answers))
