"""Canvas: signatures and the workflow primitives built from them."""

from celeriac.canvas.signature import Signature, maybe_signature, signature

__all__ = ["Signature", "maybe_signature", "signature"]
