"""Direct dispatch: a route whose function needs nothing from FastAPI is called straight from the app.

FastAPI's path for a request is ServerErrorMiddleware, its telemetry and body-limit
middlewares, ExceptionMiddleware, an AsyncExitStack, the router's scan of every
route, and dependency solving; for /decode that was about two thirds of the
server's CPU (see the README, Performance). A route takes the direct path when
its function is `async def f(request: Request, ...) -> Response` (or a subclass) whose
other parameters are request-only dependencies (`async def check(request: Request)`, the
checks of app.service.checks) and that has no path parameters: there is nothing to
validate or serialise, and the dependencies are called in their order, as FastAPI
calls them, so calling it with a Starlette `Request` gives the same answer.

A route that does not qualify (one that gains a `Query()` parameter, say) keeps
FastAPI's full path and works as it always did, only slower. Either way the
route's declaration (`@app.post(...)`, with `openapi_extra` for what the function
reads from the request itself) is what the OpenAPI document describes. The
exception handlers of the app still answer the errors of a direct route
(CodecError, HTTPException); anything else goes up to the guard, as it would.
"""

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

Endpoint = Callable[..., Awaitable[Response]]
Handler = Callable[[Request, Any], Response | Awaitable[Response]]


def _request_only(dependency: Dependant) -> bool:
    """`async def check(request: Request)` with nothing else to solve."""
    call = dependency.call
    return (
        call is not None
        and inspect.iscoroutinefunction(call)
        and dependency.request_param_name is not None
        and len(inspect.signature(call).parameters) == 1
        and not (dependency.dependencies or dependency.query_params or dependency.header_params)
        and not (dependency.body_params or dependency.cookie_params or dependency.path_params)
    )


def qualifies(route: object) -> bool:
    """Whether `route` can be called directly: `async def f(request: Request, <request-only checks>) -> Response`."""
    if not isinstance(route, APIRoute) or route.dependencies or route.param_convertors:
        return False
    endpoint = route.endpoint
    if not inspect.iscoroutinefunction(endpoint):
        return False
    signature = inspect.signature(endpoint)
    returns = signature.return_annotation
    if not (isinstance(returns, type) and issubclass(returns, Response)):
        return False
    dependant = route.dependant
    params = list(signature.parameters.values())
    checks = [dependency.name for dependency in dependant.dependencies]
    return (
        len(params) >= 1
        and dependant.request_param_name == params[0].name
        and checks == [param.name for param in params[1:]]
        and all(_request_only(dependency) for dependency in dependant.dependencies)
        and not (dependant.query_params or dependant.header_params)
        and not (dependant.body_params or dependant.cookie_params or dependant.path_params)
    )


class DirectRoutes:
    """The direct routes of `app` and of `routers`, by (method, path), rebuilt when their routes change.

    `routers` are the APIRouters the app includes with no prefix and no dependencies of their own:
    FastAPI (0.165) keeps an included router's routes behind a private wrapper rather than in
    `app.router.routes`, so the table reads each router's own (public) `routes` instead.
    """

    def __init__(self, app: FastAPI, routers: Sequence[APIRouter] = ()) -> None:
        self.app = app
        self.routers = tuple(routers)
        self.table: dict[tuple[str, str], APIRoute] = {}
        self.built_for = -1  # how many routes there were when the table was built

    def find(self, scope: Scope) -> APIRoute | None:
        routes = [*self.app.router.routes, *(route for router in self.routers for route in router.routes)]
        if len(routes) != self.built_for:
            direct = [route for route in routes if isinstance(route, APIRoute) and qualifies(route)]
            self.table = {(method, route.path): route for route in direct for method in route.methods or ()}
            self.built_for = len(routes)
        if scope.get("root_path"):  # the router strips it before matching; leave that to the router
            return None
        return self.table.get((scope["method"], scope["path"]))

    async def call(self, route: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
        """What FastAPI would do for `route`, without the layers it needs for nothing here."""
        scope["app"] = self.app
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        request = Request(scope, receive, send)
        endpoint: Endpoint = route.endpoint
        try:
            checked = {}
            for dependency in route.dependant.dependencies:  # in their order, each before the next, as FastAPI
                assert dependency.call is not None and dependency.name is not None  # see qualifies
                check = self.app.dependency_overrides.get(dependency.call, dependency.call)  # a test's override
                checked[dependency.name] = await check(request)
            response = await endpoint(request, **checked)
        except Exception as exc:
            handler = self.handler_for(exc)
            if handler is None:
                raise  # the guard logs it and answers 500
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    def handler_for(self, exc: Exception) -> Handler | None:
        """The app's exception handler for `exc`, as Starlette's ExceptionMiddleware picks it; None for the 500s."""
        handlers = self.app.exception_handlers
        if isinstance(exc, HTTPException) and exc.status_code in handlers:
            return handlers[exc.status_code]
        for kind in type(exc).__mro__:
            if kind is Exception:
                return None  # the last resort is the guard's: it logs the traceback
            if kind in handlers:
                return handlers[kind]
        return None
