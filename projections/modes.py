"""Practice-mode progress per (learner, practice_mode_id), from session_completed (seed 000).

Every session at a level counts toward the next: after 3 sessions at a level the
learner moves up one level and the count starts again.
"""

from __future__ import annotations

import msgspec

SESSIONS_PER_LEVEL = 3


class ModeProgress(msgspec.Struct, frozen=True, array_like=True):
    current_level: int = 1
    total_sessions: int = 0
    total_drills_completed: int = 0
    sessions_at_current_level: int = 0

    def after_session(self, drills_completed: int) -> ModeProgress:
        at_level = self.sessions_at_current_level + 1
        level = self.current_level
        if at_level >= SESSIONS_PER_LEVEL:
            level, at_level = level + 1, 0
        return ModeProgress(
            current_level=level,
            total_sessions=self.total_sessions + 1,
            total_drills_completed=self.total_drills_completed + drills_completed,
            sessions_at_current_level=at_level,
        )
