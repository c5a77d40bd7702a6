"""Where attachment bytes live, behind an interface: a local directory under the data dir by default.

The database keeps each attachment's metadata (type, size, SHA-256, the key); a store keeps bytes under
a key the service chooses, so another store (object storage) is a new class, not a change of the rules.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import tempfile
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

CHUNK = 256 * 1024
_KEY = re.compile(r"[0-9]{1,19}/[0-9a-f]{32}", re.ASCII)


def new_key(filing_id: int) -> str:
    return f"{filing_id}/{secrets.token_hex(16)}"


class AttachmentStore(ABC):
    @abstractmethod
    async def put(self, key: str, source: BinaryIO) -> None:
        """Stores the whole of `source` (read from its current position) under `key`, atomically."""

    @abstractmethod
    def read(self, key: str) -> AsyncIterator[bytes]:
        """The bytes under `key`, in chunks."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Drops `key` if present."""


class LocalDirectoryStore(AttachmentStore):
    """Files under `root` (default ``<data dir>/attachments``), written to a temporary file in the same
    directory and renamed into place, so a reader never sees half a file and a crash leaves none."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise ValueError("not an attachment key")
        return self.root / key

    def _put(self, key: str, source: BinaryIO) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    async def put(self, key: str, source: BinaryIO) -> None:
        await asyncio.to_thread(self._put, key, source)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread(open, self._path(key), "rb")
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)
