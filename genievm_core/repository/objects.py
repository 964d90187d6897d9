"""The envelope of every repository object but ``config``: header, zstd, AES-256-GCM.

Layout::

    magic "GVMO" | version u8 = 1 | compression u8 | encryption u8 | reserved u8 = 0
    then, not encrypted:  payload
          encrypted:      nonce (12) | AES-256-GCM(payload) | tag (16)

compression 0 = none, 1 = zstd (one frame with its content size); a chunk
that zstd does not shrink is stored uncompressed. Before compressing a large
object, a few small samples spread over it are tried at zstd's fastest level
(``worth_compressing``): when none of them shrinks, the object is stored
uncompressed without paying for a full zstd pass over random data. encryption 0 = none,
1 = AES-256-GCM with the header and the object's name as associated data, so
an object moved under another name fails to authenticate.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from genievm_core.repository.keys import Keys

__all__ = ["ZERO_ID", "EncryptionMismatch", "ObjectCodec", "ObjectDamaged"]

MAGIC = b"GVMO"
VERSION = 1
HEADER_LEN = 8
ZERO_ID = bytes(32)  # the index entry of an all-zero chunk
_NONE, _ZSTD = 0, 1
_AES_GCM = 1
PROBE_FROM = 256 << 10  # objects this large are probed before zstd runs over them
PROBE_SAMPLES, PROBE_SAMPLE_LEN = 32, 4 << 10  # 128 KiB of a 4 MiB chunk, one sample every 128 KiB
PROBE_GAIN = 0.95  # a sample that zstd-1 shrinks below this fraction makes the object worth compressing
PROBE_MAX_LEVEL = 9  # above: the best ratio was asked for, matches further apart than a sample count, no probe


class ObjectDamaged(Exception):
    """An object failed a check; the message says which."""


class EncryptionMismatch(ObjectDamaged):
    """The object is encrypted and the repository is not, or the other way round."""


@dataclass
class ObjectCodec:
    """Encodes and decodes objects and computes chunk ids for one repository."""

    keys: Keys | None
    compression_level: int = 3
    max_object_size: int = 1 << 30  # an index of a 128 TiB disk in 4 MiB chunks

    def __post_init__(self) -> None:
        self._local = threading.local()
        self._aead = AESGCM(self.keys.enc_key) if self.keys else None

    def chunk_id(self, data: bytes) -> bytes:
        if self.keys is None:
            return blake3.blake3(data).digest()
        return blake3.blake3(data, key=self.keys.id_key).digest()

    def encode(self, name: str, data: bytes) -> bytes | bytearray:
        payload, compression = data, _NONE
        if data and self.worth_compressing(data):
            packed = self._compressor().compress(data)
            if len(packed) < len(data):
                payload, compression = packed, _ZSTD
        header = MAGIC + bytes((VERSION, compression, _AES_GCM if self._aead else _NONE, 0))
        if self._aead is None:
            return header + payload
        nonce = os.urandom(12)
        out = bytearray(HEADER_LEN + 12 + len(payload) + 16)  # encrypted in place: no copy of the chunk
        out[:HEADER_LEN] = header
        out[HEADER_LEN : HEADER_LEN + 12] = nonce
        self._aead.encrypt_into(nonce, payload, header + name.encode(), memoryview(out)[HEADER_LEN + 12 :])
        return out

    def worth_compressing(self, data: bytes) -> bool:
        """Whether zstd may shrink ``data``: one of a few samples spread over it shrinks at level 1.

        Small objects are always tried whole. The samples cost a few per cent of a
        pass over the object; random data (already compressed or encrypted in the
        guest) then skips the pass, which would shrink nothing. A compressible part
        smaller than the gap between two samples (128 KiB of a 4 MiB chunk) can
        be missed, and so can repeats further apart than a sample (4 KiB); such a
        chunk is stored uncompressed. Levels above ``PROBE_MAX_LEVEL`` always
        compress: they are chosen for the ratio, whatever it costs.
        """
        if len(data) < PROBE_FROM or self.compression_level > PROBE_MAX_LEVEL:
            return True
        probe = self._probe()
        step = (len(data) - PROBE_SAMPLE_LEN) // (PROBE_SAMPLES - 1)
        view = memoryview(data)
        for k in range(PROBE_SAMPLES):
            sample = view[k * step : k * step + PROBE_SAMPLE_LEN]
            if len(probe.compress(sample)) < PROBE_GAIN * PROBE_SAMPLE_LEN:
                return True
        return False

    def decode(self, name: str, blob: bytes, *, max_size: int | None = None) -> bytes:
        """The plaintext of an object; ``max_size`` bounds what its compressed payload may claim to hold."""
        if len(blob) < HEADER_LEN or blob[:4] != MAGIC:
            raise ObjectDamaged("not a GenieVM object (bad magic or truncated)")
        header = blob[:HEADER_LEN]
        body: bytes | memoryview = memoryview(blob)[HEADER_LEN:]
        version, compression, encryption = header[4], header[5], header[6]
        if version != VERSION or compression not in (_NONE, _ZSTD) or encryption not in (_NONE, _AES_GCM):
            raise ObjectDamaged(f"unknown object version {version} or method {compression}/{encryption}")
        if (encryption == _AES_GCM) != (self._aead is not None):
            raise EncryptionMismatch("encryption does not match the repository's")
        if self._aead is not None:
            if len(body) < 28:
                raise ObjectDamaged("truncated")
            try:
                body = self._aead.decrypt(body[:12], body[12:], header + name.encode())
            except InvalidTag:
                raise ObjectDamaged("authentication failed (modified, truncated or misplaced)") from None
        if compression == _ZSTD:
            return self._decompress(body, self.max_object_size if max_size is None else max_size)
        return bytes(body)

    def _decompress(self, body: bytes | memoryview, max_size: int) -> bytes:
        try:
            size = zstandard.frame_content_size(body)
        except zstandard.ZstdError as exc:
            raise ObjectDamaged(f"zstd: {exc}") from None
        if size < 0 or size > max_size:  # unknown (-1) or absurd: never allocate it
            raise ObjectDamaged(f"zstd frame claims {size} bytes")
        try:
            data = self._decompressor().decompress(body, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise ObjectDamaged(f"zstd: {exc}") from None
        if len(data) != size:
            raise ObjectDamaged(f"zstd frame holds {len(data)} bytes, not {size}")
        return data

    def decode_chunk(self, chunk_id: bytes, blob: bytes, *, check_content: bool = True) -> bytes:
        """A chunk's bytes, its id checked against them; without ``check_content``, in an encrypted repository the
        tag is the check (it authenticates the bytes under the chunk's name, which is its id) and the keyed
        hash is not computed again; in an unencrypted one the id is always checked."""
        data = self.decode(chunk_id.hex(), blob)
        if (check_content or self._aead is None) and self.chunk_id(data) != chunk_id:
            raise ObjectDamaged("content does not match its chunk id")
        return data

    def _compressor(self) -> zstandard.ZstdCompressor:
        comp: zstandard.ZstdCompressor | None = getattr(self._local, "comp", None)
        if comp is None:
            comp = self._local.comp = zstandard.ZstdCompressor(level=self.compression_level)
        return comp

    def _probe(self) -> zstandard.ZstdCompressor:
        probe: zstandard.ZstdCompressor | None = getattr(self._local, "probe", None)
        if probe is None:
            probe = self._local.probe = zstandard.ZstdCompressor(level=1, write_content_size=False)
        return probe

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        dec: zstandard.ZstdDecompressor | None = getattr(self._local, "dec", None)
        if dec is None:
            dec = self._local.dec = zstandard.ZstdDecompressor()
        return dec
