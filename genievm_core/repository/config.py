"""The repository's ``config`` object: parsing, and its authentication (format 2).

A format-2 config carries ``authentication``: the SHA-256 ``checksum`` of its
canonical form (catches damage before any key is derived) and, when the
repository is encrypted, ``tag``, the HMAC-SHA256 of that form under a subkey
of the master key. Whoever can write the storage but has no key cannot change
a field (turn encryption off, swap the wrapped key, change the chunk id
scheme) without the tag failing. The canonical form is the config object
without ``authentication``, as JSON with sorted keys, no whitespace, UTF-8,
after the line ``genievm config v2``.

Format 1 (no authentication, passphrases taken as given) is still read;
``genievm repo upgrade`` turns it into format 2.

The feature ``key-slots`` marks a config whose ``encryption`` has more than its first key slot, or a
label on one (``genievm repo key``): a reader without it refuses the repository in one line instead of
finding fields it does not know. A config with one unlabelled key has no such fields and no feature.
The feature ``patched-chunks`` (set on every repository ``init`` creates) marks one whose indexes may be of
version 2, with patched entries (``genievm_core.repository.patches``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from pydantic import ValidationError

from genievm_core.errors import CorruptionError, UnsupportedFormatError
from genievm_core.models.manifest import CONFIG_FORMAT_VERSION, ConfigAuthentication, RepositoryConfig
from genievm_core.repository.keys import Keys
from genievm_core.repository.patches import PATCHED_CHUNKS

__all__ = ["MAX_CONFIG", "check_tag", "parse_config", "seal_config"]

MAX_CONFIG = 64 << 10  # a config is under 1 KiB; anything this large is not one
KEY_SLOTS = "key-slots"
KNOWN_FEATURES: frozenset[str] = frozenset({KEY_SLOTS, PATCHED_CHUNKS})
_SLOT_EXTRAS = ("label", "added_at")
_DOMAIN = b"genievm config v2\n"


def _canonical(data: dict[str, Any]) -> bytes:
    body = {k: v for k, v in data.items() if k != "authentication"}
    return _DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _tag(keys: Keys, canonical: bytes) -> str:
    return hmac.new(keys.config_key, canonical, hashlib.sha256).hexdigest()


def seal_config(config: RepositoryConfig, keys: Keys | None) -> tuple[RepositoryConfig, bytes]:
    """``config`` as format 2 with its authentication, and the bytes to store."""
    data = config.model_dump(mode="json", exclude={"authentication"}) | {"format_version": CONFIG_FORMAT_VERSION}
    features = [f for f in data["features"] if f != KEY_SLOTS]
    if data["encryption"] is not None and _drop_unset(data["encryption"]):
        features.append(KEY_SLOTS)
    data["features"] = features
    canonical = _canonical(data)
    auth = ConfigAuthentication(
        checksum=hashlib.sha256(canonical).hexdigest(), tag=_tag(keys, canonical) if keys else None
    )
    data["authentication"] = auth.model_dump(mode="json")
    return RepositoryConfig.model_validate(data), json.dumps(data, indent=2).encode()


def _drop_unset(encryption: dict[str, Any]) -> bool:
    """Leave out the key-slot fields that are unset; whether any is set (the config needs ``key-slots``)."""
    for slot in [encryption, *encryption["more_keys"]]:
        for name in _SLOT_EXTRAS:
            if slot[name] is None:
                del slot[name]
    if not encryption["more_keys"]:
        del encryption["more_keys"]
    return any(name in encryption for name in ("more_keys", *_SLOT_EXTRAS))


def parse_config(url: str, raw: bytes) -> tuple[RepositoryConfig, dict[str, Any]]:
    """The config and the JSON object it came from; raises when it is damaged, newer or inconsistent."""
    if len(raw) > MAX_CONFIG:
        raise CorruptionError(f"repository config at {url} is corrupt: larger than {MAX_CONFIG} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # ValueError covers bytes that are not UTF-8
        raise CorruptionError(f"repository config at {url} is corrupt: {exc}") from None
    if not isinstance(data, dict):
        raise CorruptionError(f"repository config at {url} is corrupt: not an object")
    version = data.get("format_version")
    if isinstance(version, int) and version > CONFIG_FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"repository {url} has format {version}; this GenieVM reads format {CONFIG_FORMAT_VERSION}"
        )
    unknown = set(data.get("features") or ()) - KNOWN_FEATURES
    if unknown:
        raise UnsupportedFormatError(f"repository {url} needs features this GenieVM lacks: {sorted(unknown)}")
    try:
        config = RepositoryConfig.model_validate(data)
    except ValidationError as exc:
        raise CorruptionError(f"repository config at {url} is corrupt: {_first(exc)}") from None
    _check_consistent(url, config, data)
    return config, data


def _check_consistent(url: str, config: RepositoryConfig, data: dict[str, Any]) -> None:
    auth = config.authentication
    if config.format_version < 2:
        if auth is not None:
            raise CorruptionError(f"repository config at {url} is corrupt: format 1 has no authentication")
        return
    if auth is None:
        raise CorruptionError(f"repository config at {url} fails authentication: its authentication is missing")
    if not hmac.compare_digest(hashlib.sha256(_canonical(data)).hexdigest(), auth.checksum):
        raise CorruptionError(f"repository config at {url} is corrupt or altered: it does not match its checksum")
    if (auth.tag is None) != (config.encryption is None):
        raise CorruptionError(
            f"repository config at {url} fails authentication: "
            + ("an encrypted config has no tag" if auth.tag is None else "an unencrypted config has a tag")
        )


def check_tag(url: str, data: dict[str, Any], config: RepositoryConfig, keys: Keys) -> None:
    """Raise unless a format-2 config's tag is the one its key gives."""
    if config.format_version < 2:
        return
    assert config.authentication is not None and config.authentication.tag is not None  # _check_consistent
    if not hmac.compare_digest(_tag(keys, _canonical(data)), config.authentication.tag):
        raise CorruptionError(
            f"repository config at {url} fails authentication: it was changed by someone without the key; "
            "refusing to use it"
        )


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return ".".join(str(p) for p in err["loc"]) + ": " + err["msg"]
