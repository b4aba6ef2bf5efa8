"""Faust's table manager without its start-up pause.

Faust's ``TableManager.on_start`` sleeps one second before it joins the group (the table
recovery starts the consumer's subscription), so that tables declared while the worker
starts still make it in. This app declares its one table in ``create_app``, before the
worker starts, so the pause is only a second more on every (re)start: a worker that was
killed is back a second sooner.
"""

from __future__ import annotations

from faust.tables.manager import TableManager


class PromptTableManager(TableManager):
    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()
