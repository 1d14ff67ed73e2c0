"""Who is asking: the platform owner (everything) or one creator (their own data only).

>>> Principal.creator("c1").creator_id
'c1'
>>> Principal.owner().is_owner
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from edgemetrics.events import ID_PATTERN

_ID = re.compile(ID_PATTERN)


@dataclass(frozen=True, slots=True)
class Principal:
    role: Literal["owner", "creator"]
    creator_id: str | None = None

    def __post_init__(self) -> None:
        if self.role == "creator" and (self.creator_id is None or not _ID.match(self.creator_id)):
            raise ValueError("creator_id: a creator principal needs a valid creator id")
        if self.role == "owner" and self.creator_id is not None:
            raise ValueError("creator_id: an owner principal has no creator id")

    @classmethod
    def owner(cls) -> Principal:
        return cls("owner")

    @classmethod
    def creator(cls, creator_id: str) -> Principal:
        return cls("creator", creator_id)

    @property
    def is_owner(self) -> bool:
        return self.role == "owner"
