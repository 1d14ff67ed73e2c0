"""Who is asking: the platform owner (everything) or one creator (their own data only).

The dashboard's ``authenticate`` hook returns one; the query layer confines a creator's
queries to its creator id inside the compiler.

>>> Principal.creator("c1").creator_id
'c1'
>>> Principal.owner().is_owner, Principal.creator("c9").scope
(True, 'creator:c9')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Principal:
    """The owner sees everything; a creator sees only rows of its ``creator_id``."""

    role: Literal["owner", "creator"]
    creator_id: str | None = None

    def __post_init__(self) -> None:
        if self.role == "creator":
            # Any non-empty string: the query compiler escapes it, so even a hostile id
            # (tests try them) only ever matches itself.
            if not isinstance(self.creator_id, str) or not self.creator_id.strip():
                raise ValueError(
                    "principal.creator_id: a creator principal needs its id [required]"
                )
        elif self.role == "owner":
            if self.creator_id is not None:
                raise ValueError("principal.creator_id: an owner has no creator id [forbidden]")
        else:
            raise ValueError(f"principal.role: {self.role!r} is not owner or creator [enum]")

    @classmethod
    def owner(cls) -> Principal:
        return cls("owner")

    @classmethod
    def creator(cls, creator_id: str) -> Principal:
        return cls("creator", creator_id)

    @property
    def is_owner(self) -> bool:
        return self.role == "owner"

    @property
    def scope(self) -> str:
        """The cache scope: answers are never shared between scopes."""
        return "owner" if self.role == "owner" else f"creator:{self.creator_id}"
