"""Reading and writing the server's tables: API tokens, policies and the runs the scheduler made."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from genievm_server.db import connect, policies, runs, slots, tokens
from genievm_server.errors import NameExistsError, UnknownNameError

__all__ = ["ROLES", "PolicyRow", "Role", "RunRow", "Store", "TokenRow"]

Role = Literal["read-only", "operator", "admin"]
ROLES: tuple[Role, ...] = ("read-only", "operator", "admin")  # each may do what the ones before it may
TOKEN_PREFIX = "gvm_"
NOTE_USE_EVERY = timedelta(minutes=1)
FINISHED_RUNS = ("succeeded", "failed", "cancelled", "skipped")


@dataclass
class TokenRow:
    id: str
    name: str
    role: Role
    created_at: str
    last_used_at: str | None


@dataclass
class PolicyRow:
    name: str
    enabled: bool
    spec: dict[str, Any]
    created_at: str
    updated_at: str
    last_slot: str | None


@dataclass
class RunRow:
    id: int
    policy: str
    vm: str
    kind: str
    slot: str
    state: str
    attempt: int
    job_id: str | None
    error: str | None
    created_at: str
    finished_at: str | None
    not_before: str | None


def now() -> str:
    return datetime.now(UTC).isoformat()


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Store:
    """The server's database at ``url`` (migrated on open)."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = connect(url)

    def close(self) -> None:
        self.engine.dispose()

    # tokens

    def create_token(self, role: Role, name: str = "") -> tuple[TokenRow, str]:
        """A new token: its row and the token itself (shown once; only its digest is kept)."""
        token_id = secrets.token_hex(4)
        token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        row = TokenRow(token_id, name, role, now(), None)
        with self.engine.begin() as conn:
            conn.execute(
                tokens.insert().values(id=row.id, name=name, role=role, digest=digest(token), created_at=row.created_at)
            )
        return row, token

    def authenticate(self, token: str) -> TokenRow | None:
        """The token's row when ``token`` is one of ours, else None; its last use is noted once a minute
        at most (a write on every request would have concurrent requests wait for each other)."""
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(tokens).where(tokens.c.digest == digest(token))).first()
        if found is None:
            return None
        stamp = now()
        if found.last_used_at is None or found.last_used_at < (datetime.now(UTC) - NOTE_USE_EVERY).isoformat():
            try:
                with self.engine.begin() as conn:
                    conn.execute(tokens.update().where(tokens.c.id == found.id).values(last_used_at=stamp))
            except sa.exc.OperationalError:  # busy: the note can wait for the next request
                pass
        return TokenRow(found.id, found.name, found.role, found.created_at, found.last_used_at)

    def tokens(self) -> list[TokenRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tokens).order_by(tokens.c.created_at)).all()
        return [TokenRow(r.id, r.name, r.role, r.created_at, r.last_used_at) for r in rows]

    def revoke_token(self, token_id: str) -> None:
        with self.engine.begin() as conn:
            if not conn.execute(tokens.delete().where(tokens.c.id == token_id)).rowcount:
                raise UnknownNameError(f"no token {token_id}")

    # policies

    def add_policy(self, name: str, spec: dict[str, Any], enabled: bool) -> PolicyRow:
        stamp = now()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    policies.insert().values(
                        name=name, enabled=enabled, spec=json.dumps(spec), created_at=stamp, updated_at=stamp
                    )
                )
        except sa.exc.IntegrityError:
            raise NameExistsError(f"policy {name} exists") from None
        return self.policy(name)

    def replace_policy(self, name: str, spec: dict[str, Any], enabled: bool) -> PolicyRow:
        self._update_policy(name, spec=json.dumps(spec), enabled=enabled)
        return self.policy(name)

    def set_enabled(self, name: str, enabled: bool) -> PolicyRow:
        self._update_policy(name, enabled=enabled)
        return self.policy(name)

    def set_last_slot(self, name: str, slot: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(policies.update().where(policies.c.name == name).values(last_slot=slot))

    def slot(self, name: str, kind: str) -> str | None:
        """The latest time of policy ``name``'s ``kind`` schedule (verify, prune) already handled."""
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(slots.c.last_slot).where(slots.c.policy == name, slots.c.kind == kind))
            found = value.scalar()
        return str(found) if found is not None else None

    def set_slot(self, name: str, kind: str, slot: str) -> None:
        with self.engine.begin() as conn:
            where = (slots.c.policy == name) & (slots.c.kind == kind)
            if not conn.execute(slots.update().where(where).values(last_slot=slot)).rowcount:
                conn.execute(slots.insert().values(policy=name, kind=kind, last_slot=slot))

    def delete_policy(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(slots.delete().where(slots.c.policy == name))
            if not conn.execute(policies.delete().where(policies.c.name == name)).rowcount:
                raise UnknownNameError(f"no policy {name}")

    def policy(self, name: str) -> PolicyRow:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(policies).where(policies.c.name == name)).first()
        if row is None:
            raise UnknownNameError(f"no policy {name}")
        return _policy(row)

    def policies(self) -> list[PolicyRow]:
        with self.engine.connect() as conn:
            return [_policy(r) for r in conn.execute(sa.select(policies).order_by(policies.c.name)).all()]

    def _update_policy(self, name: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            changed = conn.execute(policies.update().where(policies.c.name == name).values(updated_at=now(), **values))
            if not changed.rowcount:
                raise UnknownNameError(f"no policy {name}")

    # runs

    def add_run(
        self, policy: str, vm: str, kind: str, slot: str, *, attempt: int = 1, not_before: str | None = None
    ) -> RunRow:
        with self.engine.begin() as conn:
            result = conn.execute(
                runs.insert().values(
                    policy=policy,
                    vm=vm,
                    kind=kind,
                    slot=slot,
                    state="queued",
                    attempt=attempt,
                    created_at=now(),
                    not_before=not_before,
                )
            )
            run_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        assert run_id is not None
        return self.run(int(run_id))

    def add_runs(self, policy: str, vms: list[str], kind: str, slot: str) -> None:
        """One queued run per VM, in one transaction."""
        if vms:
            stamp = now()
            with self.engine.begin() as conn:
                conn.execute(
                    runs.insert(),
                    [
                        {
                            "policy": policy,
                            "vm": vm,
                            "kind": kind,
                            "slot": slot,
                            "state": "queued",
                            "attempt": 1,
                            "created_at": stamp,
                        }
                        for vm in vms
                    ],
                )

    def update_run(self, run_id: int, **values: Any) -> None:
        if values.get("state") in FINISHED_RUNS:
            values.setdefault("finished_at", now())
        with self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(**values))

    def run(self, run_id: int) -> RunRow:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        if row is None:
            raise UnknownNameError(f"no run {run_id}")
        return RunRow(**row._mapping)

    def runs(self, *, policy: str | None = None, unfinished: bool = False, limit: int = 100) -> list[RunRow]:
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if policy is not None:
            query = query.where(runs.c.policy == policy)
        if unfinished:
            query = query.where(runs.c.state.not_in(FINISHED_RUNS))
        with self.engine.connect() as conn:
            return [RunRow(**r._mapping) for r in conn.execute(query).all()]


def _policy(row: Any) -> PolicyRow:
    return PolicyRow(row.name, bool(row.enabled), json.loads(row.spec), row.created_at, row.updated_at, row.last_slot)
