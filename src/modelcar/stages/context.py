"""What a stage gets to work with."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..params import Params
from ..record import RunRecord
from ..ui import UI
from ..workspace import Workspace


@dataclass
class StageContext:
    params: Params
    workspace: Workspace
    record: RunRecord
    ui: UI
    # Set by a process that runs this stage beside another one, when that one failed: stop soon.
    cancel: threading.Event | None = None
