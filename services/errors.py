"""Domain errors. No web framework here: ``services.ingress.errors`` maps them to HTTP.

They cross the Ray boundary, so each keeps its constructor arguments in ``args`` (picklable).
"""

from __future__ import annotations


class RaydioError(Exception):
    """Base class; ``message`` is safe to show to the client."""

    code = "raydio_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, param)
        self.message = message
        self.param = param

    def __str__(self) -> str:
        return self.message


class InvalidInput(RaydioError):
    """The request is well-formed JSON but asks for something the model cannot do."""

    code = "invalid_request"


class InputTooLarge(InvalidInput):
    """Too many items, tokens or pixels."""

    code = "input_too_large"


class NotFound(RaydioError):
    code = "not_found"


class Conflict(RaydioError):
    """The thing already exists (an agent name, say)."""

    code = "conflict"


class Forbidden(RaydioError):
    """The caller is known but lacks the scope this needs."""

    code = "forbidden"


class ModelNotFound(NotFound):
    code = "model_not_found"


class ModelUnavailable(RaydioError):
    """No replica can take the request now (overloaded, restarting, or failed); retry later."""

    code = "model_unavailable"

    def __init__(self, message: str, param: str | None = None, retry_after_s: int = 1) -> None:
        RaydioError.__init__(self, message, param)
        self.args = (message, param, retry_after_s)
        self.retry_after_s = retry_after_s


class BadGateway(RaydioError):
    """A remote backend (another Gradio app) is down or failed; the message names it."""

    code = "bad_gateway"


class ModelTimeout(RaydioError):
    code = "model_timeout"
