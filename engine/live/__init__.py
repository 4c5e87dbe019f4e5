"""Live tuning: a merge node's inputs resident on the device, incremental re-merging and re-scoring.

``LiveSession`` holds the inputs and recomputes only what a parameter change invalidates;
``LiveLoop`` drives a session from a worker thread with newest-value-wins coalescing; ``sweep`` runs a
1-D or 2-D parameter grid on a session. No Qt here: the GUI wraps the loop in ``app.live``.
"""

from engine.live.loop import FULL, QUICK, LiveEvent, LiveLoop, LoopJob
from engine.live.session import RESIDENT, STREAMING, LiveReport, LiveSession
from engine.live.sweep import Axis, SweepResult, linspace, sweep
from engine.live.updaters import UpdateStats

__all__ = [
    "FULL", "QUICK", "LiveEvent", "LiveLoop", "LoopJob",
    "RESIDENT", "STREAMING", "LiveReport", "LiveSession", "Axis", "SweepResult", "linspace", "sweep", "UpdateStats",
]
