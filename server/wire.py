"""Repeated ``twin.v1.Trial`` messages straight into a NumPy table, without a Python loop over
the trials; and NumPy columns straight into packed repeated fields of a response.

Reading 1,000 trials field by field through the protobuf API costs ~2 ms of Python; here the
message holding the trials is serialised once (upb, C) and a numba-compiled decoder reads the
protobuf wire format into an ``[n, 9]`` float64 table. Field numbers are taken from the
generated descriptor, not written here. Without numba the same table is built field by field.

The other way round, a column of a response (a Predict's 1,000 ``p_right``, its weight
trajectories, its session and trial numbers) set through ``.tolist()`` and the protobuf API costs
~0.25 ms; :class:`PackedFields` writes the same fields' wire bytes with NumPy (a packed repeated
field is its tag, its byte length and the values' bytes) and the message parses them in C.
"""

from __future__ import annotations

import importlib.util
import itertools
import math

import numpy as np
from google.protobuf.message import Message

from twin.cancel import checkpoint
from twin.models.batch1 import compiled, kernels_ready

from twin_proto.pb import common_pb2

#: The table's columns, in order: Trial's fields.
COLUMNS: tuple[str, ...] = ("session", "trial", "contrast_left", "contrast_right", "choice", "feedback", "correct_side", "prob_left", "reaction_time")
#: Trials read field by field between two deadline checkpoints (the fallback).
_CHUNK = 10_000

_FIELD = common_pb2.Trial.DESCRIPTOR.fields_by_name
_NUMBERS = np.array([_FIELD[c].number for c in COLUMNS], np.int64)
_DOUBLE, _SIGNED32, _UNSIGNED32 = 1, 2, 3
_KINDS = {_FIELD["session"].TYPE_DOUBLE: _DOUBLE, _FIELD["session"].TYPE_ENUM: _SIGNED32, _FIELD["session"].TYPE_INT32: _SIGNED32, _FIELD["session"].TYPE_UINT32: _UNSIGNED32}
#: How each field is encoded: a double (wire type 1), or a 32-bit varint, signed (enums) or not.
_KIND = np.array([_KINDS[_FIELD[c].type] for c in COLUMNS], np.int64)

#: Whether the decoder is compiled (without numba, :func:`compiled` leaves it plain Python: slow).
HAVE_NUMBA = importlib.util.find_spec("numba") is not None


@compiled
def _varint(buf, pos):  # type: ignore[no-untyped-def]
    """``(value as uint64, next position)``; position -1 when the buffer ends inside it."""
    result = np.uint64(0)
    shift = np.uint64(0)
    while pos < buf.shape[0]:
        b = np.uint64(buf[pos])
        pos += 1
        if shift < 64:
            result |= (b & np.uint64(0x7F)) << shift
        if b < 128:
            return result, pos
        shift += np.uint64(7)
    return result, -1


@compiled
def _skip(buf, pos, wire):  # type: ignore[no-untyped-def]
    """The position after a field of wire type ``wire`` starting at ``pos`` (-1: malformed)."""
    if wire == 0:
        _, pos = _varint(buf, pos)
        return pos
    if wire == 1:
        return pos + 8 if pos + 8 <= buf.shape[0] else -1
    if wire == 5:
        return pos + 4 if pos + 4 <= buf.shape[0] else -1
    if wire == 2:
        size, pos = _varint(buf, pos)
        if pos < 0 or pos + np.int64(size) > buf.shape[0]:
            return -1
        return pos + np.int64(size)
    return -1


@compiled
def _decode(buf, field, n, numbers, kind):  # type: ignore[no-untyped-def]
    """The ``[n, 9]`` table of the Trial messages in field ``field`` of the message ``buf``
    (NaN reaction time where unset); ``(table, -1)``, or ``(table, byte offset)`` of malformed input."""
    out = np.zeros((n, numbers.shape[0]))
    out[:, numbers.shape[0] - 1] = np.nan
    raw = np.empty(8, np.uint8)  # a little-endian double's bytes, read through a float64 view
    as_double = raw.view(np.float64)
    row = 0
    pos = 0
    end = buf.shape[0]
    while pos < end:
        key, pos = _varint(buf, pos)
        if pos < 0:
            return out, end
        num, wire = np.int64(key >> np.uint64(3)), np.int64(key & np.uint64(7))
        if num != field or wire != 2:
            pos = _skip(buf, pos, wire)
            if pos < 0:
                return out, end
            continue
        size, pos = _varint(buf, pos)
        stop = pos + np.int64(size)
        if pos < 0 or stop > end or row >= n:
            return out, pos
        while pos < stop:
            key, pos = _varint(buf, pos)
            if pos < 0:
                return out, stop
            num, wire = np.int64(key >> np.uint64(3)), np.int64(key & np.uint64(7))
            col = -1
            for c in range(numbers.shape[0]):
                if numbers[c] == num:
                    col = c
            if col >= 0 and kind[col] == 1 and wire == 1 and pos + 8 <= stop:
                raw[:] = buf[pos : pos + 8]
                out[row, col] = as_double[0]
                pos += 8
            elif col >= 0 and kind[col] != 1 and wire == 0:
                v, pos = _varint(buf, pos)
                if pos < 0:
                    return out, stop
                # 32-bit fields keep their low 32 bits (as protobuf parsers do); enums are signed
                out[row, col] = np.int32(np.int64(v)) if kind[col] == 2 else np.uint32(v & np.uint64(0xFFFFFFFF))
            else:
                pos = _skip(buf, pos, wire)
                if pos < 0 or pos > stop:
                    return out, stop
        row += 1
    return out, -1


def _table_python(trials: object) -> np.ndarray:
    """The same table read field by field (no numba)."""
    n = len(trials)  # type: ignore[arg-type]
    nan = math.nan
    rows: list[tuple[float, ...]] = []
    it = iter(trials)  # type: ignore[call-overload]
    for _ in range(0, n, _CHUNK):  # one pass over the messages, a deadline checkpoint per chunk
        checkpoint()
        rows += [
            (t.session, t.trial, t.contrast_left, t.contrast_right, t.choice, t.feedback, t.correct_side, t.prob_left, t.reaction_time if t.HasField("reaction_time") else nan)
            for t in itertools.islice(it, _CHUNK)
        ]
    return np.array(rows, dtype=float).reshape(n, len(COLUMNS))


def trial_table(parent: Message, field: str = "trials") -> np.ndarray:
    """``[n, 9]`` float64 table of the repeated Trial field ``field`` of ``parent``, columns
    :data:`COLUMNS` (NaN reaction time where unset; enum values as sent, unknown ones included).

    Raises:
        ValueError: the serialised message does not parse back (it always should).
    """
    trials = getattr(parent, field)
    if not HAVE_NUMBA or not len(trials) or not kernels_ready():  # the server may still be compiling
        return _table_python(trials)
    checkpoint()
    number = parent.DESCRIPTOR.fields_by_name[field].number
    buf = np.frombuffer(parent.SerializeToString(), np.uint8)
    table, bad = _decode(buf, number, len(trials), _NUMBERS, _KIND)
    if bad >= 0:
        raise ValueError(f"malformed Trial message at byte {bad}")
    return table


def trial_table_of(trials: object) -> np.ndarray:
    """The table of a repeated Trial field given without its message (read field by field)."""
    return _table_python(trials)


def warm_up() -> None:
    """Compile the decoder (or load it from numba's cache) before the first request."""
    from twin_proto.pb import twin_service_pb2

    msg = twin_service_pb2.SuppliedHistory(trials=[common_pb2.Trial(session=1, trial=1, contrast_left=1.0, reaction_time=0.5)])
    if HAVE_NUMBA:
        _decode(np.frombuffer(msg.SerializeToString(), np.uint8), 1, 1, _NUMBERS, _KIND)


def _uvarint(x: int) -> bytes:
    """The base-128 varint of one unsigned integer."""
    out = bytearray()
    while x >= 0x80:
        out.append((x & 0x7F) | 0x80)
        x >>= 7
    out.append(x)
    return bytes(out)


def _varint_bytes(values: np.ndarray) -> bytes:
    """The base-128 varints of ``[n]`` non-negative integers (< 2**63), concatenated."""
    v = np.asarray(values, np.int64)
    if not v.size:
        return b""
    top = int(v.max())
    if top < 0x80:  # one byte each (session numbers, small trial counts)
        return v.astype(np.uint8).tobytes()
    g = (top.bit_length() + 6) // 7  # 7-bit groups of the largest value
    groups = np.empty((v.size, g), np.uint8)
    keep = np.ones((v.size, g), bool)
    rest = v
    for j in range(g):  # group j: bits 7j..7j+6, continuation bit when more follow
        nxt = rest >> 7
        groups[:, j] = (rest & 0x7F) | ((nxt != 0) << 7)
        if j:
            keep[:, j] = rest != 0
        rest = nxt
    return groups[keep].tobytes()


class PackedFields:
    """Wire bytes of a message's fields, built column by column; ``message.MergeFromString``
    of :meth:`bytes` sets them (after any field already set, as a parse would).

    Field numbers are given by name from the message's descriptor.

    Args:
        descriptor: the message's descriptor (``PredictResponse.DESCRIPTOR``).
    """

    def __init__(self, descriptor: object) -> None:
        self._fields = descriptor.fields_by_name  # type: ignore[attr-defined]
        self._parts: list[bytes] = []

    def _field(self, name: str, data: bytes) -> None:
        """Field ``name`` of wire type 2 (length-delimited) holding ``data``."""
        self._parts += [_uvarint((int(self._fields[name].number) << 3) | 2), _uvarint(len(data)), data]

    def doubles(self, name: str, values: np.ndarray) -> PackedFields:
        """A ``repeated double`` field from ``[n]`` floats (nothing when empty)."""
        data = np.ascontiguousarray(values, "<f8").tobytes()
        if data:
            self._field(name, data)
        return self

    def unsigned(self, name: str, values: np.ndarray) -> PackedFields:
        """A ``repeated uint32``/``uint64`` field from ``[n]`` non-negative integers.

        Raises:
            ValueError: a negative value.
        """
        v = np.asarray(values, np.int64)
        if v.size and int(v.min()) < 0:
            raise ValueError(f"{name}: negative value {int(v.min())} in an unsigned field")
        data = _varint_bytes(v)
        if data:
            self._field(name, data)
        return self

    def message(self, name: str, body: PackedFields) -> PackedFields:
        """One element of a ``repeated`` message field (or the message field itself)."""
        self._field(name, body.bytes())
        return self

    def string(self, name: str, value: str) -> PackedFields:
        """A ``string`` field (nothing when empty, as proto3 writes it)."""
        data = value.encode("utf-8")
        if data:
            self._field(name, data)
        return self

    def bytes(self) -> bytes:
        """The fields' wire bytes, in the order they were added."""
        return b"".join(self._parts)


__all__ = ["COLUMNS", "PackedFields", "trial_table", "trial_table_of", "warm_up"]
