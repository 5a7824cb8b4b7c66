"""Keyset pagination with opaque page tokens.

A page token encodes the sort key of the last item returned; the next page starts after it, so
pages stay consistent while items are added.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from service.errors import InvalidArgumentError

T = TypeVar("T")

Key = tuple[str | int, ...]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of results.

    Attributes:
        items: the page's items.
        next_page_token: token of the next page; empty on the last page.
    """

    items: tuple[T, ...]
    next_page_token: str


def encode_token(key: Key) -> str:
    """An opaque token for the sort key ``key``."""
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")


def decode_token(token: str, field: str = "page_token") -> Key:
    """The sort key in ``token``.

    Raises:
        InvalidArgumentError: a token this server did not issue.
    """
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        key = json.loads(raw)
        if not isinstance(key, list) or not key or not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in key):
            raise ValueError(key)
        return tuple(key)
    except (ValueError, UnicodeDecodeError, TypeError):
        raise InvalidArgumentError.field(field, "not a page token issued by this server") from None


def paginate(items: Sequence[T], key: Callable[[T], Key], page_size: int, page_token: str, default_size: int = 100, max_size: int = 1000) -> Page[T]:
    """The page of ``items`` (sorted by ``key``) after ``page_token``.

    Args:
        items: all items, sorted ascending by ``key``.
        key: sort key of an item.
        page_size: requested size (0: ``default_size``; larger than ``max_size``: ``max_size``).
        page_token: token of the previous page's end; empty for the first page.
        default_size: size when none is requested.
        max_size: largest page.
    """
    size = default_size if page_size <= 0 else min(page_size, max_size)
    start = 0
    if page_token:
        after = decode_token(page_token)
        start = len(items)
        for i, item in enumerate(items):
            k = key(item)
            if [type(v) for v in k] != [type(v) for v in after]:
                raise InvalidArgumentError.field("page_token", "not a page token of this listing")
            if k > after:
                start = i
                break
    chunk = tuple(items[start : start + size])
    more = start + size < len(items)
    return Page(chunk, encode_token(key(chunk[-1])) if more and chunk else "")


__all__ = ["Key", "Page", "decode_token", "encode_token", "paginate"]
