"""Attachments over REST, with the bearer token of the GraphQL API:

    POST /filings/{id}/attachments?material=CODE   multipart/form-data, one part named `file`
         -> 201 {"attachment": {"id", "material", "contentType", "sizeBytes", "sha256", ...}}
    GET  /filings/{id}/attachments/{attachmentId}   -> the bytes, with the sniffed type
    DELETE /filings/{id}/attachments/{attachmentId} -> {"removed": {"id"}}: only what is not yet submitted

The upload route has its own body bound (UPLOAD_BODY_BYTES: the attachment limit plus multipart
overhead) instead of the 1 MB of every other route (api.middleware.BodySizeLimitMiddleware): a body
declared larger is a 413 before a byte is read, and one that streams past the bound is cut off at it.
Starlette's multipart parser spools the file part to a temporary file (python-multipart), so an
upload is never held in memory whole. The type is sniffed from the content (filetype): images and PDF
only, whatever the name or the part's Content-Type claim. Who may upload is checked before the body is
read (the material is a query parameter for that reason), and again when the row is recorded.

Every error is JSON, ``{"error": {"message", "code", "field"?}}``, with the status of its code.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.parse
from typing import Any

import filetype
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from api.auth import service as auth_service
from api.auth.service import Viewer
from api.errors import HTTP_STATUS, AppError, BadUserInput, ErrorCode, Unauthenticated
from api.filings import service
from api.filings.schema import attachment_json
from api.filings.storage import AttachmentStore, LocalDirectoryStore, new_key
from api.ids import parse_id
from api.state import AppState

log = logging.getLogger("api.filings")

MULTIPART_OVERHEAD = 64 * 1024
UPLOAD_BODY_BYTES = service.MAX_ATTACHMENT_BYTES + MULTIPART_OVERHEAD
"""The upload route's body bound (the middleware's override for UPLOAD_PATH)."""
UPLOAD_PATH = r"/filings/[^/]+/attachments"
SNIFF_BYTES = 8192
HASH_CHUNK = 256 * 1024


class PayloadTooLarge(AppError):
    code = ErrorCode.PAYLOAD_TOO_LARGE
    default_message = "文件过大"


class BadRequest(AppError):
    code = ErrorCode.BAD_REQUEST
    default_message = "请求格式有误"


def _error(exc: AppError) -> JSONResponse:
    return JSONResponse(exc.as_json(), status_code=HTTP_STATUS[exc.code])


async def _viewer(request: Request, state: AppState) -> Viewer:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("请先登录", reason="missing_token")
    async with state.db.sessionmaker() as session:
        return await auth_service.authenticate(session, state.tokens, token.strip())


def sniff(head: bytes) -> str | None:
    """The content's type by its signature, if it is one we keep (images, PDF)."""
    guessed = filetype.guess(head)
    if guessed is None or guessed.mime not in service.ALLOWED_TYPES:
        return None
    return str(guessed.mime)


def _digest(upload: UploadFile) -> str:
    digest = hashlib.sha256()
    upload.file.seek(0)
    while chunk := upload.file.read(HASH_CHUNK):
        digest.update(chunk)
    upload.file.seek(0)
    return digest.hexdigest()


def filing_routes(state: AppState, store: AttachmentStore | None = None) -> list[BaseRoute]:
    attachments = store or LocalDirectoryStore(state.settings.data_dir / "attachments")

    async def upload(request: Request) -> Response:
        try:
            return await _upload(request)
        except AppError as exc:
            return _error(exc)
        except HTTPException as exc:  # Starlette's multipart errors
            return _error(BadRequest(f"上传格式有误：{str(exc.detail)[:100]}", reason="bad_multipart"))

    async def _upload(request: Request) -> Response:
        viewer = await _viewer(request, state)
        filing_id = request.path_params["filing_id"]
        material = request.query_params.get("material", "")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > UPLOAD_BODY_BYTES:
            raise PayloadTooLarge(f"附件最大{service.MAX_ATTACHMENT_BYTES // (1024 * 1024)}MB", field="file")
        async with state.db.sessionmaker() as session:
            await service.check_upload(session, viewer, filing_id, material)  # before reading the body
            await session.rollback()
        form = await request.form(max_files=1, max_fields=1, max_part_size=4096)
        try:
            part = form.get("file")
            if not isinstance(part, UploadFile):
                raise BadUserInput("请以 multipart/form-data 上传名为 file 的文件", field="file")
            size = part.size if part.size is not None else 0
            if size > service.MAX_ATTACHMENT_BYTES:
                raise PayloadTooLarge(
                    f"附件最大{service.MAX_ATTACHMENT_BYTES // (1024 * 1024)}MB", field="file"
                )
            if size == 0:
                raise BadUserInput("文件为空", field="file")
            part.file.seek(0)
            content_type = sniff(part.file.read(SNIFF_BYTES))
            if content_type is None:
                raise BadUserInput(
                    "文件内容不是允许的类型：仅限图片（JPEG、PNG、WebP、HEIC）或PDF",
                    field="file",
                    reason="type_not_allowed",
                )
            checksum = _digest(part)
            key = new_key(parse_id(filing_id, "filingId"))
            await attachments.put(key, part.file)
            try:
                async with state.db.sessionmaker() as session:
                    row = await service.add_attachment(
                        session,
                        viewer,
                        filing_id,
                        material=material,
                        filename=(part.filename or "").strip(),
                        content_type=content_type,
                        size_bytes=size,
                        sha256=checksum,
                        storage_key=key,
                    )
                    filing = await service.kind_for(session, row.filing_id)
            except BaseException:
                await attachments.delete(key)
                raise
        finally:
            await form.close()
        return JSONResponse({"attachment": attachment_json(filing, row)}, status_code=201)

    async def download(request: Request) -> Response:
        try:
            viewer = await _viewer(request, state)
            async with state.db.sessionmaker() as session:
                row = await service.attachment_for_download(
                    session, viewer, request.path_params["filing_id"], request.path_params["attachment_id"]
                )
        except AppError as exc:
            return _error(exc)
        name = urllib.parse.quote(row.filename or "attachment")
        headers: dict[str, Any] = {
            "content-length": str(row.size_bytes),
            "content-disposition": f"attachment; filename*=UTF-8''{name}",
            "x-content-type-options": "nosniff",
            "cache-control": "private, no-store",
            "x-checksum-sha256": row.sha256,
        }
        return StreamingResponse(
            attachments.read(row.storage_key), media_type=row.content_type, headers=headers
        )

    async def remove(request: Request) -> Response:
        try:
            viewer = await _viewer(request, state)
            async with state.db.sessionmaker() as session:
                row = await service.remove_attachment(
                    session, viewer, request.path_params["filing_id"], request.path_params["attachment_id"]
                )
        except AppError as exc:
            return _error(exc)
        try:
            await attachments.delete(row.storage_key)
        except OSError:  # the row is gone: an orphaned file is harmless, and logged
            log.warning("attachment %s removed but its file %s was not deleted", row.id, row.storage_key)
        return JSONResponse({"removed": {"id": str(row.id)}})

    return [
        Route("/filings/{filing_id}/attachments", upload, methods=["POST"]),
        Route("/filings/{filing_id}/attachments/{attachment_id}", download, methods=["GET"]),
        Route("/filings/{filing_id}/attachments/{attachment_id}", remove, methods=["DELETE"]),
    ]
