"""Operations already found valid, so graphql-core's validation runs once per text.

Validating the legacy ``metrics`` operation costs about 3 ms of a 16-20 ms request (its
rules walk every field with type information), and clients send the same few texts over
and over. Validity depends only on the text (the schema and the rules are fixed), so a
text that passed once passes again. Only valid texts are remembered, by SHA-256 digest
(32 bytes each, at most ``MAX_REMEMBERED``, least recently used forgotten first): a
stream of distinct texts costs a bounded amount of memory and is validated as before.
Invalid texts are validated every time, so their errors are always fresh.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

__all__ = ["MAX_REMEMBERED", "ValidDocuments"]

MAX_REMEMBERED = 512


class ValidDocuments:
    """A bounded, least-recently-used set of the digests of valid operation texts."""

    def __init__(self, *, size: int = MAX_REMEMBERED) -> None:
        self._size = size
        self._digests: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()  # one schema may also be executed from other threads

    def __contains__(self, text: str) -> bool:
        digest = _digest(text)
        with self._lock:
            if digest not in self._digests:
                return False
            self._digests.move_to_end(digest)
            return True

    def remember(self, text: str) -> None:
        digest = _digest(text)
        with self._lock:
            self._digests[digest] = None
            self._digests.move_to_end(digest)
            while len(self._digests) > self._size:
                self._digests.popitem(last=False)

    def __len__(self) -> int:
        return len(self._digests)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
