"""Queues by resource, so GPU, CPU and network-bound workers scale apart on many machines."""

from enum import StrEnum


class Queue(StrEnum):
    GPU = "gpu"  # model inference that wants an accelerator (falls back to CPU)
    CPU = "cpu"  # CPU-bound work: detection post-processing, grouping, small models
    IO = "io"  # network and disk: fetching images from IIIF servers and URLs
    RERANK = "rerank"  # latency-sensitive: the search reranker, never behind a bulk import


ALL_QUEUES = tuple(q.value for q in Queue)
