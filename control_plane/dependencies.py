"""Request-scoped dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session

from control_plane.db import get_session
from control_plane.push import Gateway
from control_plane.services.oauth import TokenIssuer

DbSession = Annotated[Session, Depends(get_session)]


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


AdapterGateway = Annotated[Gateway, Depends(get_gateway)]

#: WSO2 names path parameters in camelCase.
ApiId = Annotated[str, Path(alias="apiId")]
RevisionPath = Annotated[str, Path(alias="revisionId")]


def get_token_issuer(request: Request) -> TokenIssuer:
    issuer: TokenIssuer = request.app.state.token_issuer
    return issuer


Issuer = Annotated[TokenIssuer, Depends(get_token_issuer)]
