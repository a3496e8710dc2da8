"""The one place where errors become HTTP responses (``{"errors": [...]}`` bodies)."""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from ..registry import errors

log = logging.getLogger("moorage.api")


def _backend_unavailable(exc: BaseException) -> bool:
    """A storage or database service that is down or overloaded (worth a retry: 503, not 500)."""
    try:
        from sqlalchemy.exc import DBAPIError, TimeoutError as PoolTimeout

        if isinstance(exc, PoolTimeout) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
            return True
        if isinstance(exc, DBAPIError) and type(exc.orig).__name__ in (
            "OperationalError", "ConnectionDoesNotExistError", "CannotConnectNowError", "InterfaceError",
            "TooManyConnectionsError", "ConnectionFailureError",
        ):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError, HTTPClientError

        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            return True
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError) and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) in (500, 502, 503, 504):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, (ConnectionRefusedError, TimeoutError))


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
        return await handler(request)
    except errors.RegistryError as exc:
        return error_response(exc, head=head)
    except web.HTTPMethodNotAllowed as exc:
        return error_response(errors.Unsupported(f"method {request.method} not allowed here", headers={"Allow": ",".join(sorted(exc.allowed_methods))}), head=head)
    except web.HTTPNotFound:
        if request.path.startswith("/v2/"):
            # The spec's error table has no "no such route"; UNSUPPORTED ("the operation is
            # unsupported") is the code that says it, with the 404 of an unknown resource.
            return error_response(errors.Unsupported(f"no API endpoint at {request.path[:200]}", status=404),
                                  head=head)
        return error_response(errors.NotFound(f"no route for {request.path[:200]}"), head=head)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(errors.SizeInvalid(exc.text or "request body too large", status=413), head=head)
    except web.HTTPException:
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:
        if _backend_unavailable(exc):
            log.error("backend unavailable on %s %s: %r", request.method, request.path[:200], exc)
            return error_response(errors.Unavailable("a storage or database service is unavailable; retry",
                                                     headers={"Retry-After": "5"}), head=head)
        log.exception("unhandled error on %s %s", request.method, request.path[:200])
        return error_response(errors.RegistryError("internal error"), head=head)

