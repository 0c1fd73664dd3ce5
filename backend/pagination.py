"""Offset pagination for list endpoints: ``?offset=&limit=`` with a bounded page, and a
``Link: <…>; rel="next"`` header while a full page came back (RFC 8288), so JSON lists stay
plain arrays for existing clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request, Response

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000


@dataclass(frozen=True)
class Page:
    offset: int
    limit: int

    def link_next(self, request: Request, response: Response, returned: int) -> None:
        if returned >= self.limit:
            url = request.url.include_query_params(offset=self.offset + self.limit,
                                                   limit=self.limit)
            response.headers["Link"] = f'<{url}>; rel="next"'


def _page(
    offset: Annotated[int, Query(ge=0, description="Items to skip")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")] =
    DEFAULT_LIMIT,
) -> Page:
    return Page(offset, limit)


PageDep = Annotated[Page, Depends(_page)]
