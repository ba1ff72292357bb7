"""A small interview knowledge base and answers for the answer-scoring tests.

Two questions with a rubric each, one reference note, and answers of known quality:
a good one, a partial one and one about something else entirely.
"""

from __future__ import annotations

HASH_QUESTION = "How does a hash table deal with collisions?"
HASH_RUBRIC = """Hash table collisions
- Explains separate chaining: each bucket holds a linked list of the entries that hash to it.
- Explains open addressing: on a collision, probe for another free slot, for example linear probing.
- Mentions the load factor: when the table gets too full it is resized and every key rehashed."""
HASH_REFERENCE = (
    "A hash table maps keys to buckets with a hash function. Two keys that land in the same "
    "bucket collide. Chaining stores colliding entries in a list per bucket. Open addressing "
    "stores every entry in the array itself and probes for the next free slot.")
CACHE_QUESTION = "How does caching work in HTTP?"
CACHE_RUBRIC = """HTTP caching
- Names the Cache-Control header and max-age, which say how long a response stays fresh.
- Explains validation with an ETag and If-None-Match, answered by 304 Not Modified.
- Mentions that private responses must not be stored by shared caches."""

GOOD_HASH_ANSWER = (
    "When two keys hash to the same bucket you get a collision. One way to handle it is "
    "chaining, where every bucket keeps a linked list of entries. The other way is open "
    "addressing, where you probe for the next free slot, for example with linear probing. "
    "When the load factor gets too high, the table is resized and all keys are rehashed.")
PARTIAL_HASH_ANSWER = "I think you keep a list in each bucket for the keys that collide."
GOOD_CACHE_ANSWER = (
    "The server sends a Cache-Control header with a max-age, so the browser knows how long "
    "the response stays fresh. After that it revalidates with the ETag in an If-None-Match "
    "header, and the server answers 304 Not Modified when nothing changed.")
OFF_TOPIC_ANSWER = (
    "Last summer I went hiking in the mountains with my dog, and in the evenings I like to "
    "cook pasta for my friends and watch old films.")
