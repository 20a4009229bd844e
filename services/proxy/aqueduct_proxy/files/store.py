"""Files in the NATS object store, their metadata in a KV bucket keyed by owner.

The same code serves the embedded single server and a NATS cluster (``replicas``). Bytes are written
before metadata and metadata is deleted before bytes, so a crash leaves at worst an unreferenced object,
never metadata pointing at nothing.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import defaultdict
from typing import IO

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import InvalidKeyError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from aqueduct_libs import names
from aqueduct_libs.bus import ensure_kv, ensure_object_store, read_bucket
from aqueduct_proxy.domain.errors import StoreUnavailableError
from aqueduct_proxy.files.domain import FileNotFoundInStoreError, QuotaExceededError, StoredFile

__all__ = ["FileStore"]

_NOT_OPEN = "The files store is not available yet; try again in a few seconds."


class FileStore:
    def __init__(self, js: JetStreamContext, *, quota_bytes_per_user: int, replicas: int = 1) -> None:
        self._js = js
        self._quota = quota_bytes_per_user
        self._replicas = replicas
        self._objects: ObjectStore | None = None
        self._meta: KeyValue | None = None
        # One owner's uploads are serialised (quota check, then write); other owners' run in parallel.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def start(self) -> None:
        """Open the object store and metadata bucket, creating them if missing (any start order)."""
        # The proxy and the batch worker own these: they also bring existing ones to ``replicas``.
        await ensure_object_store(self._js, names.FILES_OBJECT_STORE, self._replicas, adjust=True)
        await ensure_kv(self._js, names.FILES_META_BUCKET, self._replicas, adjust=True)
        self._objects = await self._js.object_store(names.FILES_OBJECT_STORE)
        self._meta = await self._js.key_value(names.FILES_META_BUCKET)

    @property
    def objects(self) -> ObjectStore:
        if self._objects is None:
            raise StoreUnavailableError(_NOT_OPEN)
        return self._objects

    @property
    def meta(self) -> KeyValue:
        if self._meta is None:
            raise StoreUnavailableError(_NOT_OPEN)
        return self._meta

    @staticmethod
    def _key(owner: str, file_id: str) -> str:
        return f"{names.kv_safe(owner)}.{file_id}"

    async def save(
        self,
        owner: str,
        filename: str,
        purpose: str,
        data: bytes | IO[bytes],
        size: int,
        *,
        file_id: str | None = None,
        enforce_quota: bool = True,
    ) -> StoredFile:
        async with self._locks[owner]:
            if enforce_quota:
                used = await self.used_bytes(owner)
                if used + size > self._quota:
                    raise QuotaExceededError(
                        f"Storing this file ({size} bytes) would exceed your storage quota of {self._quota} "
                        f"bytes ({used} bytes in use). Delete files you no longer need."
                    )
            record = StoredFile.new(owner, filename, purpose, size, file_id=file_id)
            info = await self.objects.put(record.id, data)  # type: ignore[arg-type]  # nats-py accepts any readable stream
            record = record.model_copy(update={"bytes": info.size, "sha256": info.digest or ""})
            await self.meta.put(self._key(owner, record.id), record.model_dump_json().encode())
            return record

    async def get(self, owner: str, file_id: str) -> StoredFile:
        try:
            entry = await self.meta.get(self._key(owner, file_id))
        except (KeyNotFoundError, InvalidKeyError, nats.errors.BadSubjectError):
            # An id that cannot even be a key (a client's typo, a fuzzer's bytes) names no file either.
            raise FileNotFoundInStoreError(f"No such File object: {file_id}", param="file_id") from None
        return StoredFile.model_validate_json(entry.value or b"")

    async def list(self, owner: str, purpose: str | None = None) -> list[StoredFile]:
        if self._meta is None:  # read through the bus's one KV reader, once the store is open
            raise StoreUnavailableError(_NOT_OPEN)
        entries = await read_bucket(self._js, names.FILES_META_BUCKET, f"{names.kv_safe(owner)}.>")
        files = [StoredFile.model_validate_json(value) for value in entries.values()]
        return [f for f in files if purpose is None or f.purpose == purpose]

    async def content(self, owner: str, file_id: str) -> bytes:
        record = await self.get(owner, file_id)
        try:
            result = await self.objects.get(record.id)
        except NotFoundError:
            raise FileNotFoundInStoreError(f"The content of {file_id} is gone.", param="file_id") from None
        return bytes(result.data or b"")

    async def open_content(
        self, owner: str, file_id: str, spool_memory_bytes: int
    ) -> tuple[StoredFile, IO[bytes]]:
        """The file's bytes in a temporary file (in memory up to ``spool_memory_bytes``), rewound, for
        sending without holding a large file in memory. The caller closes it."""
        record = await self.get(owner, file_id)
        spool = tempfile.SpooledTemporaryFile(max_size=spool_memory_bytes)
        try:
            await self.objects.get(record.id, writeinto=spool)  # type: ignore[arg-type]
        except NotFoundError:
            spool.close()
            raise FileNotFoundInStoreError(f"The content of {file_id} is gone.", param="file_id") from None
        spool.seek(0)
        return record, spool  # type: ignore[return-value]

    async def delete(self, owner: str, file_id: str) -> None:
        record = await self.get(owner, file_id)
        await self.meta.delete(self._key(owner, record.id))
        try:
            await self.objects.delete(record.id)
        except NotFoundError:
            pass  # a previous delete got this far already

    async def used_bytes(self, owner: str) -> int:
        return sum(f.bytes for f in await self.list(owner))
