"""What is remembered of operation texts seen before: which are valid, and what short
ones parse to.

Validating the legacy ``metrics`` operation costs about 3 ms of a 16-20 ms request (its
rules walk every field with type information), and clients send the same few texts over
and over. Validity depends only on the text (the schema and the rules are fixed), so a
text that passed once passes again. Only valid texts are remembered, by SHA-256 digest
(32 bytes each, at most ``MAX_REMEMBERED``, least recently used forgotten first): a
stream of distinct texts costs a bounded amount of memory and is validated as before.
Invalid texts are validated every time, so their errors are always fresh.

Parsing costs ~0.3-0.5 ms more (the benchmark's series operation). ``ShortTextParserCache``
is Strawberry's ``ParserCache`` for texts of at most ``MAX_CACHED_TEXT`` characters: a
document keeps its tokens (~2 MB at the token limit, ~20 KB for a usual operation), so
only short ones are kept, at most ``MAX_PARSED``.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import suppress

from graphql import GraphQLError
from strawberry.extensions import ParserCache

__all__ = [
    "MAX_CACHED_TEXT",
    "MAX_PARSED",
    "MAX_REMEMBERED",
    "ShortTextParserCache",
    "ValidDocuments",
]

MAX_REMEMBERED = 512
MAX_CACHED_TEXT = 2_000
"""The longest operation text whose parsed document is kept (characters)."""
MAX_PARSED = 128


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


class ShortTextParserCache(ParserCache):
    """Strawberry's ``ParserCache`` (least recently used, at most ``MAX_PARSED``) for
    texts of at most ``MAX_CACHED_TEXT`` characters; longer ones are parsed every time.
    A text that does not parse is left to Strawberry, which parses it again and answers
    its error (``ParserCache`` raises it where Strawberry no longer turns it into one)."""

    def __init__(self) -> None:
        super().__init__(maxsize=MAX_PARSED)

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        text = context.query
        if text is not None and len(text) <= MAX_CACHED_TEXT:
            with suppress(GraphQLError):
                context.graphql_document = self.cached_parse_document(text, **context.parse_options)
        yield
