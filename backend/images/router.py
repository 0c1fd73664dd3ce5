from __future__ import annotations

from typing import Annotated

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from fastapi import APIRouter, Header, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from backend.config import settings
from backend.db import SessionDep
from backend.deps import CurrentUser, StreamingUser
from backend.errors import BadRequestError
from backend.images import service
from backend.images.schemas import ImageCreatedOut, ImageOut, UploadIn, UploadOut
from backend.models import ImageUpload
from backend.pagination import PageDep
from backend.storage import is_disk_full

router = APIRouter(prefix="/api/images", tags=["images"])
WRITE_BLOCK = 8 * 1024 * 1024  # bytes gathered before one write+hash in a worker thread


def _upload_out(upload: ImageUpload) -> UploadOut:
    out = UploadOut.model_validate(upload)
    out.max_chunk_bytes = settings.max_upload_chunk_bytes
    return out


@router.post("/uploads", status_code=201)
def create_upload(data: UploadIn, session: SessionDep, user: CurrentUser) -> UploadOut:
    return _upload_out(service.create_upload(session, user, data))


@router.get("/uploads/{upload_id}")
def get_upload(upload_id: str, session: SessionDep, user: CurrentUser) -> UploadOut:
    return _upload_out(service.get_upload(session, user, upload_id))


@router.put(
    "/uploads/{upload_id}",
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {}}}},
)
async def put_chunk(
    upload_id: str,
    request: Request,
    user: StreamingUser,
    content_range: Annotated[str | None, Header()] = None,
) -> UploadOut:
    """Append bytes START..END (``Content-Range: bytes START-END/TOTAL``). START must equal
    ``received_bytes``; after an interruption, GET the upload and resume from there."""
    start, end, total = service.parse_content_range(content_range)
    with service.chunk_guard(upload_id):
        await run_in_threadpool(service.check_chunk, user.id, upload_id, start, total)
        writer = await run_in_threadpool(service.ChunkWriter, upload_id, start)
        receiver = _ChunkReceiver(writer, end - start + 1)
        try:
            await receiver.run(request)
        finally:
            if receiver.full is None:
                try:
                    await run_in_threadpool(writer.close)
                except OSError as exc:
                    if not is_disk_full(exc):
                        raise
                    receiver.full = exc
            if receiver.full is not None:
                await run_in_threadpool(writer.discard)  # the offset stays at ``start``
            upload = await run_in_threadpool(
                service.record_chunk, upload_id, start, writer.offset - start
            )
        if receiver.full is not None:
            raise service.storage_full_error(start) from receiver.full
        if receiver.too_long:
            raise BadRequestError("The body is longer than its Content-Range.")
    return _upload_out(upload)


class _ChunkReceiver:
    """Moves a request body to a ``ChunkWriter``: the event loop only gathers the pieces
    (no copies); a worker thread writes and hashes one block while the next one arrives,
    so receiving and writing overlap. At most ~3 blocks are held: memory stays flat."""

    def __init__(self, writer: service.ChunkWriter, limit: int) -> None:
        self.writer = writer
        self.limit = limit
        self.too_long = False
        self.full: OSError | None = None  # the disk filled up: the rest is drained, unsaved

    async def run(self, request: Request) -> None:
        send, receive = anyio.create_memory_object_stream[list[bytes]](1)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write_blocks, receive)
                async with send:
                    await self._gather(request, send)
        except BaseExceptionGroup as group:  # one task failed: raise its error as it is
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _gather(self, request: Request,
                      send: MemoryObjectSendStream[list[bytes]]) -> None:
        block: list[bytes] = []
        size = received = 0
        try:
            async for piece in request.stream():
                received += len(piece)
                if received > self.limit:
                    self.too_long = True
                    break
                if self.full is None and piece:
                    block.append(piece)
                    size += len(piece)
                    if size >= WRITE_BLOCK:
                        await send.send(block)
                        block, size = [], 0
        except ClientDisconnect:
            pass  # keep what arrived: it is a valid prefix the client can resume after
        if block and self.full is None:
            await send.send(block)

    async def _write_blocks(self, receive: MemoryObjectReceiveStream[list[bytes]]) -> None:
        async with receive:
            async for block in receive:
                if self.full is not None:
                    continue
                try:
                    await run_in_threadpool(self.writer.write, block)
                except OSError as exc:
                    if not is_disk_full(exc):
                        raise
                    self.full = exc


@router.post("/uploads/{upload_id}/complete", status_code=201)
def complete_upload(upload_id: str, session: SessionDep, user: CurrentUser,
                    response: Response) -> ImageCreatedOut:
    """Validate the uploaded tarball. The image is returned even when invalid: its
    ``validation_message`` says what to fix. A re-upload of the same bytes returns the
    earlier image with a ``notice``."""
    image, notice = service.complete(session, user, upload_id)
    if notice is not None:
        response.status_code = 200
    return ImageCreatedOut(notice=notice, **ImageOut.model_validate(image).model_dump())


@router.delete("/uploads/{upload_id}", status_code=204)
def abort_upload(upload_id: str, session: SessionDep, user: CurrentUser) -> None:
    service.abort(session, user, upload_id)


@router.get("")
def list_images(request: Request, response: Response, session: SessionDep,
                user: CurrentUser, page: PageDep) -> list[ImageOut]:
    """Newest first, a page at a time (``Link: rel="next"`` names the next one)."""
    out = [ImageOut.model_validate(i)
           for i in service.list_images(session, user, page.offset, page.limit)]
    page.link_next(request, response, len(out))
    return out


@router.get("/{image_id}")
def get_image(image_id: int, session: SessionDep, user: CurrentUser) -> ImageOut:
    return ImageOut.model_validate(service.get_image(session, user, image_id))


@router.delete("/{image_id}", status_code=204)
def delete_image(image_id: int, session: SessionDep, user: CurrentUser) -> None:
    service.delete_image(session, user, image_id)
