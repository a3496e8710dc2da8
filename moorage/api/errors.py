"""The one place where errors become HTTP responses (``{"errors": [...]}`` bodies).

Backend outages arrive typed: storage drivers raise :class:`~moorage.errors.StorageUnavailable`
and the metadata layer :class:`~moorage.errors.DatabaseUnavailable` (503 UNAVAILABLE with
``Retry-After``; their ``...Full`` kin 507 "storage is full", logged once a minute through
:mod:`moorage.api.storage_full`), so this module knows no SQLAlchemy, asyncpg or botocore type.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from .. import errors
from ..metadata.errors import outage_error, text_error
from .storage_full import WRITE_METHODS, full_state

log = logging.getLogger("moorage.api")


def error_response(exc: errors.RegistryError, *, head: bool = False) -> web.Response:
    body = json.dumps({"errors": [e.to_json() for e in [exc, *exc.more]]}).encode()
    headers = {"Docker-Distribution-API-Version": "registry/2.0", **exc.headers}
    if head:
        # A HEAD response carries no body, but the status and headers still tell the story.
        return web.Response(status=exc.status, headers=headers)
    return web.Response(status=exc.status, body=body, content_type="application/json", headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    head = request.method == "HEAD"
    try:
        response = await handler(request)
        if request.method in WRITE_METHODS and response.status < 300 and (state := full_state(request)) is not None:
            state.wrote()
        return response
    except errors.StorageFullError as exc:
        # logged once a minute, not per request (a full disk refuses every write)
        if (state := full_state(request)) is not None:
            state.refused(exc, request.method, request.path)
        else:
            log.error("storage full on %s %s: %s (%r)", request.method, request.path[:200], exc.reason, exc.__cause__)
        return error_response(exc, head=head)
    except errors.BackendUnavailable as exc:
        log.error("backend unavailable on %s %s: %s (%r)", request.method, request.path[:200], exc.reason, exc.__cause__)
        return error_response(exc, head=head)
    except errors.RegistryError as exc:
        return error_response(exc, head=head)
    except web.HTTPMethodNotAllowed as exc:
        return error_response(
            errors.Unsupported(
                f"method {request.method} not allowed here", headers={"Allow": ",".join(sorted(exc.allowed_methods))}
            ),
            head=head,
        )
    except web.HTTPNotFound:
        if request.path.startswith("/v2/"):
            # The spec's error table has no "no such route"; UNSUPPORTED ("the operation is
            # unsupported") is the code that says it, with the 404 of an unknown resource.
            return error_response(errors.Unsupported(f"no API endpoint at {request.path[:200]}", status=404), head=head)
        return error_response(errors.NotFound(f"no route for {request.path[:200]}"), head=head)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(errors.SizeInvalid(exc.text or "request body too large", status=413), head=head)
    except web.HTTPException:
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:
        outage = outage_error(exc)
        if outage is not None:
            # A database path that bypassed Database.read/write (which translate outages): still
            # a 503 (507 if full), and said, so the path gets its translation.
            log.error("untranslated database outage on %s %s: %s", request.method, request.path[:200], outage.reason)
            return error_response(outage, head=head)
        refused = text_error(exc)
        if refused is not None:
            # Text the database cannot store (NUL on PostgreSQL, a lone surrogate) on a path
            # that bypassed Database.read/write: the client's fault, a 400; logged so the path
            # gets its validation.
            # (the type only: the driver's message may quote the statement's parameters)
            log.warning(
                "unvalidated text reached the database on %s %s: %s", request.method, request.path[:200], type(exc).__name__
            )
            return error_response(refused, head=head)
        log.exception("unhandled error on %s %s", request.method, request.path[:200])
        return error_response(errors.RegistryError("internal error"), head=head)
