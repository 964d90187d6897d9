"""GenieVM storage target for repositories on a local or mounted filesystem."""

from __future__ import annotations

from genievm_storage_fs.storage import FilesystemStorage, open_filesystem_storage

__all__ = ["FilesystemStorage", "open_filesystem_storage"]
