"""Canvas: signatures and the workflow primitives built from them."""

from celeriac.canvas.chain import chain
from celeriac.canvas.chord import chord
from celeriac.canvas.chunks import chunks, xmap, xstarmap
from celeriac.canvas.group import group
from celeriac.canvas.signature import Signature, maybe_signature, signature

__all__ = [
    "Signature",
    "chain",
    "chord",
    "chunks",
    "group",
    "maybe_signature",
    "signature",
    "xmap",
    "xstarmap",
]
