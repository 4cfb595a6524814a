"""Codec registry, compression and accept_content enforcement (core layer).

Serializers are named as in kombu (``json``, ``pickle``, ``yaml``, ``msgpack``) and carry the
same content types, so messages and results read the same on both sides (wire protocol §2.5).
The JSON codec wraps datetimes, decimals, UUIDs and bytes in kombu's
``{"__type__": ..., "__value__": ...}`` objects. PyYAML and msgpack are imported only when
their codec is used.
"""

from __future__ import annotations

import base64
import bz2
import datetime
import decimal
import importlib
import json
import lzma
import pickle
import uuid
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from celeriac.exceptions import ContentDisallowed, DecodeError, EncodeError, ImproperlyConfigured

__all__ = [
    "Codec",
    "compress",
    "decompress",
    "dumps",
    "get_codec",
    "loads",
    "normalize_accept",
    "register",
    "serializer_name",
]

# Content encodings whose payload is handed to the decoder as bytes, not text.
_BINARY_ENCODINGS = frozenset({"binary", "ascii-8bit"})

# kombu pickles with protocol 4 (the captured pickle bodies start with b"\x80\x04").
_PICKLE_PROTOCOL = 4


@dataclass(frozen=True, slots=True)
class Codec:
    """One serializer: its name, content type and encoding, and its two functions.

    ``encoder`` returns text or bytes; ``decoder`` receives text for text encodings and bytes
    for ``binary``, as kombu's registry does, so codecs written for Celery work unchanged.
    A signing codec (``celeriac.security``) also has ``message_encoder``/``message_decoder``,
    which take a task message's headers as well, so that its signature can cover them.
    """

    name: str
    content_type: str
    content_encoding: str
    encoder: Callable[[Any], str | bytes]
    decoder: Callable[[Any], Any]
    message_encoder: Callable[[Any, Mapping[str, Any]], str | bytes] | None = None
    message_decoder: Callable[[Any, Mapping[str, Any]], Any] | None = None


_codecs_by_name: dict[str, Codec] = {}
_codecs_by_type: dict[str, Codec] = {}


def register(
    name: str,
    encoder: Callable[[Any], str | bytes],
    decoder: Callable[[Any], Any],
    content_type: str,
    content_encoding: str = "utf-8",
    *,
    message_encoder: Callable[[Any, Mapping[str, Any]], str | bytes] | None = None,
    message_decoder: Callable[[Any, Mapping[str, Any]], Any] | None = None,
) -> None:
    """Add or replace a serializer, as ``kombu.serialization.register`` does."""
    codec = Codec(
        name, content_type, content_encoding, encoder, decoder, message_encoder, message_decoder
    )
    previous = _codecs_by_name.get(name)
    if previous is not None:
        _codecs_by_type.pop(previous.content_type, None)
    _codecs_by_name[name] = codec
    _codecs_by_type[content_type] = codec


def get_codec(name_or_content_type: str) -> Codec:
    """Return the codec for a serializer name or a content type.

    Raises:
        ImproperlyConfigured: nothing is registered under that name or type.
    """
    codec = _codecs_by_name.get(name_or_content_type) or _codecs_by_type.get(name_or_content_type)
    if codec is None:
        known = ", ".join(sorted(_codecs_by_name))
        raise ImproperlyConfigured(
            f"no serializer registered for {name_or_content_type!r} (known: {known})"
        )
    return codec


def dumps(
    obj: Any, serializer: str = "json", *, headers: Mapping[str, Any] | None = None
) -> tuple[str, str, bytes]:
    """Serialize ``obj``; return ``(content_type, content_encoding, data)``.

    ``headers`` are those of the task message ``obj`` is the body of, for a signing codec.

    Raises:
        ImproperlyConfigured: unknown serializer, or its library is not installed.
        EncodeError: the codec cannot encode a value in ``obj``; the message names its
            type, and the codec's own error is chained.
    """
    codec = get_codec(serializer)
    try:
        if headers is not None and codec.message_encoder is not None:
            payload = codec.message_encoder(obj, headers)
        else:
            payload = codec.encoder(obj)
    except ImproperlyConfigured:
        raise
    except Exception as exc:
        # Encoders raise TypeError, ValueError (circular references), PicklingError and
        # more, as kombu's do; callers catch one type, as with kombu's EncodeError.
        raise EncodeError(str(exc) or repr(exc)) from exc
    if isinstance(payload, str):
        payload = payload.encode(codec.content_encoding)
    return codec.content_type, codec.content_encoding, payload


def loads(
    data: bytes,
    content_type: str,
    content_encoding: str,
    *,
    accept: Collection[str] | None = None,
    headers: Mapping[str, Any] | None = None,
) -> Any:
    """Deserialize a payload, refusing content types outside ``accept`` when it is given.

    ``accept`` may hold serializer names or content types. A payload with no content type is
    raw data (kombu's ``application/data``): ``None`` when empty, the bytes otherwise.
    ``headers`` are those of the task message the payload is the body of, for a signing codec.

    Raises:
        ContentDisallowed: the content type is not accepted.
        DecodeError: no codec for the type, or the payload does not decode.
    """
    if not content_type:
        return data or None
    codec = _codecs_by_type.get(content_type) or _codecs_by_name.get(content_type)
    if accept is not None and not _is_accepted(content_type, codec, accept):
        label = f"{codec.name} ({content_type})" if codec is not None else content_type
        raise ContentDisallowed(
            f"refusing to deserialize content of type {label}: not in accept_content"
        )
    if codec is None:
        raise DecodeError(f"no serializer registered for content type {content_type!r}")
    try:
        binary = (
            content_encoding in _BINARY_ENCODINGS or codec.content_encoding in _BINARY_ENCODINGS
        )
        payload = data if binary else data.decode(content_encoding or "utf-8")
        if headers is not None and codec.message_decoder is not None:
            return codec.message_decoder(payload, headers)
        return codec.decoder(payload)
    except DecodeError:
        raise
    except Exception as exc:
        # Decoders (pickle above all) raise a wide variety of errors on bad input; callers need
        # one type to reject the message with, and the cause stays chained.
        raise DecodeError(f"cannot decode {content_type} payload: {exc!r}") from exc


def serializer_name(content_type: str) -> str | None:
    """Return the name of the serializer for ``content_type`` (``pickle``), None if unknown."""
    codec = _codecs_by_type.get(content_type)
    return codec.name if codec is not None else None


def _is_accepted(content_type: str, codec: Codec | None, accept: Collection[str]) -> bool:
    return content_type in accept or (codec is not None and codec.name in accept)


def normalize_accept(accept: Iterable[str]) -> frozenset[str]:
    """Map serializer names and content types to the set of accepted content types.

    Raises:
        ImproperlyConfigured: a name (not a content type) that no serializer has.
    """
    content_types: set[str] = set()
    for item in accept:
        if "/" in item:
            content_types.add(item)
        else:
            content_types.add(get_codec(item).content_type)
    return frozenset(content_types)


# ---- compression (the ``compression`` header, wire protocol §2.2) ----


@dataclass(frozen=True, slots=True)
class _Compressor:
    mime: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]
    # A fresh incremental decompressor whose ``decompress(data, max_length)`` stops there.
    decompressor: Callable[[], Any]
    # bz2 and lzma read concatenated streams, as their one-shot functions do; zlib ignores
    # whatever follows its one stream.
    is_multi_stream: bool


_ZLIB = _Compressor("application/x-gzip", zlib.compress, zlib.decompress, zlib.decompressobj, False)
_BZ2 = _Compressor("application/x-bz2", bz2.compress, bz2.decompress, bz2.BZ2Decompressor, True)
_LZMA = _Compressor(
    "application/x-lzma", lzma.compress, lzma.decompress, lzma.LZMADecompressor, True
)

_COMPRESSORS: dict[str, _Compressor] = {
    "zlib": _ZLIB,
    "gzip": _ZLIB,
    "application/x-gzip": _ZLIB,
    "bzip2": _BZ2,
    "bz2": _BZ2,
    "application/x-bz2": _BZ2,
    "lzma": _LZMA,
    "xz": _LZMA,
    "application/x-lzma": _LZMA,
}


def compress(data: bytes, method: str) -> tuple[bytes, str]:
    """Compress ``data``; return it with the MIME type for the ``compression`` header.

    Raises:
        ImproperlyConfigured: unknown method.
    """
    compressor = _COMPRESSORS.get(method)
    if compressor is None:
        known = ", ".join(sorted(_COMPRESSORS))
        raise ImproperlyConfigured(f"unknown compression method {method!r} (known: {known})")
    return compressor.compress(data), compressor.mime


def decompress(data: bytes, method_or_mime: str, *, max_size: int | None = None) -> bytes:
    """Undo :func:`compress`, given the method name or the header's MIME type.

    With ``max_size``, decompression stops as soon as the output would pass that many bytes,
    so a small payload that expands enormously (a compression bomb) costs no more memory
    than the limit.

    Raises:
        DecodeError: unknown method, the data is not validly compressed, or it expands past
            ``max_size``.
    """
    compressor = _COMPRESSORS.get(method_or_mime)
    if compressor is None:
        raise DecodeError(f"unsupported compression {method_or_mime!r}")
    try:
        if max_size is None:
            return compressor.decompress(data)
        return _decompress_at_most(compressor, data, max_size, method_or_mime)
    except (zlib.error, OSError, lzma.LZMAError, ValueError, EOFError) as exc:
        raise DecodeError(f"cannot decompress {method_or_mime} payload: {exc}") from exc


def _decompress_at_most(compressor: _Compressor, data: bytes, max_size: int, method: str) -> bytes:
    """Decompress, asking each stream for one byte more than what is left to detect excess.

    Trailing bytes that are not a stream are ignored, as the one-shot functions do.
    """
    chunks: list[bytes] = []
    size, remaining = 0, data
    while True:
        decompressor = compressor.decompressor()
        try:
            output: bytes = decompressor.decompress(remaining, max_size - size + 1)
        except (OSError, lzma.LZMAError):
            if chunks:
                break
            raise
        size += len(output)
        if size > max_size:
            raise DecodeError(
                f"{method} payload of {len(data)} bytes expands past the limit of {max_size}"
                " bytes; decompression stopped there"
            )
        if not decompressor.eof:
            raise DecodeError(f"cannot decompress {method} payload: the stream is truncated")
        chunks.append(output)
        remaining = decompressor.unused_data
        if not (compressor.is_multi_stream and remaining):
            break
    return b"".join(chunks)


# ---- the JSON codec with kombu's type tags ----


def _tag(type_name: str, value: str) -> dict[str, str]:
    return {"__type__": type_name, "__value__": value}


def _encode_bytes(value: bytes) -> dict[str, str]:
    try:
        return _tag("bytes", value.decode("utf-8"))
    except UnicodeDecodeError:
        return _tag("base64", base64.b64encode(value).decode("ascii"))


# Order matters: datetime is a subclass of date, so it is tried first.
_JSON_ENCODERS: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (datetime.datetime, lambda value: _tag("datetime", value.isoformat())),
    (datetime.date, lambda value: _tag("date", value.isoformat())),
    (datetime.time, lambda value: _tag("time", value.isoformat())),
    (decimal.Decimal, lambda value: _tag("decimal", str(value))),
    (uuid.UUID, lambda value: _tag("uuid", str(value))),
    (bytes, _encode_bytes),
)
_JSON_ENCODER_BY_TYPE: dict[type, Callable[[Any], Any]] = dict(_JSON_ENCODERS)

_JSON_DECODERS: dict[str, Callable[[str], Any]] = {
    "datetime": datetime.datetime.fromisoformat,
    "date": datetime.date.fromisoformat,
    "time": datetime.time.fromisoformat,
    "decimal": decimal.Decimal,
    "uuid": uuid.UUID,
    "bytes": lambda value: value.encode("utf-8"),
    "base64": base64.b64decode,
}

_TAG_KEYS = frozenset({"__type__", "__value__"})


def _json_default(value: Any) -> Any:
    encoder = _JSON_ENCODER_BY_TYPE.get(type(value))
    if encoder is not None:
        return encoder(value)
    for kind, subclass_encoder in _JSON_ENCODERS:
        if isinstance(value, kind):
            return subclass_encoder(value)
    raise TypeError(f"Object of type {type(value).__qualname__} is not JSON serializable")


def _json_object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) != 2 or obj.keys() != _TAG_KEYS:
        return obj
    decoder = _JSON_DECODERS.get(obj["__type__"])
    if decoder is None:
        raise DecodeError(f"unsupported JSON type tag {obj['__type__']!r}")
    return decoder(obj["__value__"])


# One encoder and decoder for the process: json.dumps with keyword arguments builds a new
# JSONEncoder on every call, and this runs for every message and result. Measured on a task
# body: 5.7 us per dumps this way, 8.8 us with json.dumps(default=...), 5.6 us plain json.dumps.
_JSON_ENCODER = json.JSONEncoder(default=_json_default)
_JSON_DECODER = json.JSONDecoder(object_hook=_json_object_hook)
_PLAIN_JSON_DECODER = json.JSONDecoder()


def _json_dumps(obj: Any) -> str:
    return _JSON_ENCODER.encode(obj)


def _json_loads(text: str) -> Any:
    # The hook runs in Python for every object; a text without a tag needs none of it,
    # which keeps big bodies (a long chain's remaining hops) at the C decoder's speed.
    if "__type__" not in text:
        return _PLAIN_JSON_DECODER.decode(text)
    return _JSON_DECODER.decode(text)


def _pickle_dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=_PICKLE_PROTOCOL)


def _pickle_loads(data: bytes) -> Any:
    # Loading a pickle can run code: workers reach this only when accept_content opts in.
    return pickle.loads(data)


# ---- optional codecs, imported on first use ----


def _import_optional(module: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"the {extra} serializer needs the {module!r} package: pip install 'celeriac[{extra}]'"
        ) from exc


def _yaml_dumps(obj: Any) -> str:
    result: str = _import_optional("yaml", "yaml").safe_dump(obj)
    return result


def _yaml_loads(text: str) -> Any:
    return _import_optional("yaml", "yaml").safe_load(text)


def _msgpack_dumps(obj: Any) -> bytes:
    result: bytes = _import_optional("msgpack", "msgpack").packb(obj, use_bin_type=True)
    return result


def _msgpack_loads(data: bytes) -> Any:
    return _import_optional("msgpack", "msgpack").unpackb(data, raw=False)


register("json", _json_dumps, _json_loads, "application/json", "utf-8")
register("pickle", _pickle_dumps, _pickle_loads, "application/x-python-serialize", "binary")
register("yaml", _yaml_dumps, _yaml_loads, "application/x-yaml", "utf-8")
register("msgpack", _msgpack_dumps, _msgpack_loads, "application/x-msgpack", "binary")
