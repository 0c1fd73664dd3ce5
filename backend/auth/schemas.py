from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from backend.auth.identity import Email, Login, Username
from backend.text import Text


class RegisterIn(BaseModel):
    # Normalised on validation (backend.auth.identity): what is stored and compared.
    email: Email
    username: Username
    password: Text = Field(min_length=8, max_length=1024)


class LoginIn(BaseModel):
    username: Login
    password: str = Field(max_length=1024)


class TokenCreateIn(BaseModel):
    name: Text = Field(default="cli", max_length=100)
    # Either an existing session/token authenticates the request, or these credentials do.
    username: Login | None = None
    password: str | None = Field(default=None, max_length=1024)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    email: str
    username: str
    is_admin: bool


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreatedOut(TokenOut):
    token: str = Field(description="Shown once; store it (the CLI keeps it in ~/.config).")
