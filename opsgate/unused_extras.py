"""Optional extras of libraries that opsgate never uses, kept out of its processes.

python-telegram-bot imports ``cryptography`` whenever it is installed, for Telegram Passport
decryption, which needs a private key opsgate never configures: ~7 MB of resident memory (the
package is there because the MCP SDK needs it). FastAPI imports ``pydantic.v1``, pydantic's copy
of its first version, only to refuse models of it, which opsgate has none of: ~1.4 MB. For
exactly those importing modules the import fails as if the module were missing, which both
handle (their ``try: ... except ImportError``); every other importer, the MCP SDK included,
gets the module as usual.

Like lazy_kube_client, this must be installed before the libraries are imported: the
package's ``__init__`` does it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import FrameType, ModuleType

# module (with its submodules) -> the modules whose import of it is refused
SKIPPED: dict[str, frozenset[str]] = {
    "cryptography": frozenset({"telegram._bot", "telegram._passport.credentials"}),
    "pydantic.v1": frozenset({"fastapi._compat.shared"}),
}


def install() -> None:
    """Put the finder first on the meta path, once per interpreter."""
    if not any(isinstance(finder, _SkipFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SkipFinder())


def importing_module() -> str | None:
    """The module whose code runs the import being resolved: the first frame outside the
    import machinery and this module."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if name != __name__ and not name.startswith(("importlib", "_frozen_importlib")):
            return name
        frame = frame.f_back
    return None


class _SkipFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        for skipped, refused in SKIPPED.items():
            inside = fullname == skipped or fullname.startswith(f"{skipped}.")
            if inside and importing_module() in refused:
                raise ModuleNotFoundError(f"opsgate does not load {skipped} here", name=fullname)
        return None
