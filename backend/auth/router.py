from __future__ import annotations

from fastapi import APIRouter, Response

from backend.auth import service
from backend.auth.schemas import (
    LoginIn,
    RegisterIn,
    TokenCreatedOut,
    TokenCreateIn,
    TokenOut,
    UserOut,
)
from backend.config import settings
from backend.db import SessionDep
from backend.deps import CurrentUser, OptionalUser
from backend.errors import UnauthorizedError
from backend.security import set_session_cookie

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post("/register", status_code=201)
def register(data: RegisterIn, session: SessionDep, response: Response) -> UserOut:
    user = service.register(session, data)
    set_session_cookie(response, user)
    return UserOut.model_validate(user)


@router.post("/login")
def login(data: LoginIn, session: SessionDep, response: Response) -> UserOut:
    user = service.authenticate(session, data.username, data.password)
    set_session_cookie(response, user)
    return UserOut.model_validate(user)


@router.post("/logout", status_code=204)
def logout(response: Response) -> None:
    response.delete_cookie(settings.session_cookie_name)


@router.get("/me")
def me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


@router.post("/tokens", status_code=201)
def create_token(data: TokenCreateIn, session: SessionDep, user: OptionalUser) -> TokenCreatedOut:
    if data.username is not None and data.password is not None:
        user = service.authenticate(session, data.username, data.password)
    if user is None:
        raise UnauthorizedError("Give a username and password, or log in first.")
    token, secret = service.create_token(session, user, data.name, data.expires_in_days)
    return TokenCreatedOut(token=secret, **TokenOut.model_validate(token).model_dump())


@router.get("/tokens")
def list_tokens(session: SessionDep, user: CurrentUser) -> list[TokenOut]:
    return [TokenOut.model_validate(t) for t in service.list_tokens(session, user)]


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: int, session: SessionDep, user: CurrentUser) -> TokenOut:
    return TokenOut.model_validate(service.revoke_token(session, user, token_id))
