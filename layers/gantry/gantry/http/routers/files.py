"""Files: upload (multipart), list, retrieve, delete and download, owner-scoped."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.routing import APIRoute
from starlette.responses import RedirectResponse, Response, StreamingResponse

from gantry.domain.errors import UnsupportedMediaType
from gantry.domain.files import PURPOSES, attachment
from gantry.domain.keys import Principal
from gantry.http.deps import CurrentRuntime, Scope, scope_of
from gantry.http.responses import json_response
from gantry.http.schemas.jobs import Deleted, FileList, FileObjectModel

FilesReader = Annotated[Principal, Depends(Scope("files:read"))]
FilesWriter = Annotated[Principal, Depends(Scope("files:write"))]
MAX_PAGE = 10_000


class AuthFirstRoute(APIRoute):
    """Authenticates before FastAPI reads a form body, so an anonymous caller gets 401 and
    learns nothing from validation errors; a non-multipart upload is a 415."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scope = scope_of(self.dependant)
        multipart = self.body_field is not None

        async def checked(request: Request) -> Response:
            if scope is not None:
                await scope(request, None)
            content_type = request.headers.get("content-type", "")
            if multipart and not content_type.lower().startswith("multipart/form-data"):
                raise UnsupportedMediaType(
                    f"Unsupported Content-Type '{content_type or '(none)'}'. Upload files as "
                    "multipart/form-data with the fields 'file' and 'purpose'.",
                    code="unsupported_media_type",
                )
            return await handler(request)

        return checked


router = APIRouter(prefix="/v1", tags=["files"], route_class=AuthFirstRoute)


def _page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


@router.post(
    "/files", response_model=FileObjectModel, operation_id="files-create", summary="Upload a file"
)
def upload_file(
    principal: FilesWriter,
    rt: CurrentRuntime,
    file: Annotated[UploadFile, File(description="A JSONL file.")],
    purpose: Annotated[str, Form(description="fine-tune or batch")],
) -> Response:
    limit = rt.jobs.files.max_bytes
    data = file.file.read(limit + 1)
    uploaded = rt.jobs.files.upload(principal.org_id, file.filename, purpose, data)
    return json_response(uploaded.as_dict())


@router.get("/files", response_model=FileList, operation_id="files-list", summary="List files")
def list_files(
    principal: FilesReader,
    rt: CurrentRuntime,
    purpose: Annotated[str | None, Query(description=", ".join(PURPOSES))] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
    after: Annotated[str | None, Query(max_length=128, description="A file id")] = None,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> Response:
    files, more = rt.jobs.files.list_files(
        principal.org_id, purpose, limit, after, newest_first=order == "desc"
    )
    return json_response(_page([f.as_dict() for f in files], more))


@router.get(
    "/files/{file_id}",
    response_model=FileObjectModel,
    operation_id="files-retrieve",
    summary="Retrieve a file",
)
def retrieve_file(file_id: str, principal: FilesReader, rt: CurrentRuntime) -> Response:
    return json_response(rt.jobs.files.get(principal.org_id, file_id).as_dict())


@router.delete(
    "/files/{file_id}", response_model=Deleted, operation_id="files-delete", summary="Delete a file"
)
def delete_file(file_id: str, principal: FilesWriter, rt: CurrentRuntime) -> Response:
    deleted = rt.jobs.files.delete(principal.org_id, file_id)
    return json_response({"id": deleted.id, "object": "file", "deleted": True})


@router.get(
    "/files/{file_id}/content",
    operation_id="files-content",
    summary="Download a file's contents",
    response_class=Response,
)
def file_content(file_id: str, principal: FilesReader, rt: CurrentRuntime) -> Response:
    download = rt.jobs.files.content(principal.org_id, file_id)
    file = download.file
    if download.parts is None:
        # Larger than Lambda may stream (200 MB): the client fetches it from S3 directly
        # (HTTP clients drop the API key when a redirect leaves the origin).
        return RedirectResponse(str(download.url), status_code=307)
    media = "text/csv" if file.filename.endswith(".csv") else "application/jsonl"
    # Streamed: in AWS this route is a streaming integration, so a file may be larger than
    # the 6 MB a buffered Lambda response carries.
    return StreamingResponse(
        download.parts,
        media_type=media,
        headers={
            "content-disposition": attachment(file.filename),
            "content-length": str(file.bytes),
        },
    )
