"""Engine exceptions: bad input (exit code 2 in the CLI) versus cancellation."""

from __future__ import annotations


class EngineInputError(Exception):
    """Bad input from the user: a malformed file, an incompatible model, an invalid recipe.

    The message names the file and, where it applies, the tensor, so it can be shown as is.
    """

    def __init__(self, message: str, *, path: str | None = None, tensor: str | None = None):
        self.path = path
        self.tensor = tensor
        text = message
        if tensor is not None and f"'{tensor}'" not in text:
            text += f" (tensor '{tensor}')"
        if path is not None and str(path) not in text:
            text = f"{path}: {text}"
        super().__init__(text)


class CheckpointError(EngineInputError):
    """A checkpoint that cannot be read or does not fit the others."""


class RecipeError(EngineInputError):
    """A recipe that does not validate; ``problems`` lists every (node id, message)."""

    def __init__(self, problems: list[tuple[str | None, str]]):
        self.problems = problems
        lines = [f"[{nid}] {msg}" if nid else msg for nid, msg in problems]
        super().__init__("invalid recipe:\n  " + "\n  ".join(lines))


class Cancelled(Exception):
    """Raised inside a run when its cancellation token is set."""
