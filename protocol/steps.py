"""Values only a check can make: the token behind "each check narrows a type".

A module that verifies something keeps one `StepToken` private and passes it
when its step builds the verified value; the value's `__post_init__` calls
`StepToken.admit`, so the value cannot be built anywhere else. mypy already
refuses a call that omits the token; this refuses, at run time, a value built
with any other object in its place (python-tuf and sigstore-python return
verified values in the same spirit).
"""

from __future__ import annotations

from typing import Final


class StepToken:
    """The private proof, held by one module, that one of its steps made a value."""

    __slots__ = ("_owner",)

    def __init__(self, owner: str) -> None:
        self._owner: Final = owner

    def admit(self, token: object, made: type) -> None:
        """Refuse to build `made` unless `token` is this module's own."""
        if token is not self:
            raise TypeError(f"a {made.__name__} is made only by the checks of {self._owner}, never built directly")


__all__ = ["StepToken"]
