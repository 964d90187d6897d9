"""What the routes share as FastAPI dependencies: the service, the scheduler and the caller's token.

Every route states the role it needs with ``needs(role)``: the dependency that checks the token, and the
role in the OpenAPI schema (``x-genievm-role``), from which the tests call every route.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from genievm_server.errors import ForbiddenError, NotAuthenticatedError
from genievm_server.scheduler import Scheduler
from genievm_server.service import Service
from genievm_server.store import ROLES, Role, TokenRow

__all__ = ["COOKIE", "ROLE_KEY", "SchedulerDep", "ServiceDep", "needs"]

ROLE_KEY = "x-genievm-role"
COOKIE = "genievm_token"  # the web console's copy of the token
_bearer = HTTPBearer(auto_error=False, description="an API token: genievm server token create --role ROLE")


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _scheduler(request: Request) -> Scheduler:
    scheduler: Scheduler = request.app.state.scheduler
    return scheduler


ServiceDep = Annotated[Service, Depends(_service)]
SchedulerDep = Annotated[Scheduler, Depends(_scheduler)]


def _caller(
    request: Request,
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenRow:
    given = credentials.credentials if credentials is not None and credentials.scheme.lower() == "bearer" else None
    if given is None and request.url.path.startswith("/console"):  # the console's cookie is for its pages only
        given = request.cookies.get(COOKIE)
    if not given:
        raise NotAuthenticatedError("no API token: send Authorization: Bearer TOKEN")
    token = service.store.authenticate(given)
    if token is None:
        raise NotAuthenticatedError("the API token is not known to this server (revoked, or mistyped)")
    return token


def needs(role: Role) -> dict[str, Any]:
    """The keyword arguments of a route that needs a token of ``role`` or above."""

    def check(token: Annotated[TokenRow, Depends(_caller)]) -> TokenRow:
        if ROLES.index(token.role) < ROLES.index(role):
            raise ForbiddenError(f"token {token.id} has role {token.role}; this needs {role}")
        return token

    return {"dependencies": [Depends(check)], "openapi_extra": {ROLE_KEY: role}}
