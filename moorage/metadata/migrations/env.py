"""Alembic environment.

The registry runs migrations itself (``moorage migrate``, or at start for SQLite): it opens its
own async engine and hands Alembic a synchronous connection through
``config.attributes["connection"]`` (see :func:`moorage.metadata.db.Database.migrate`), so one
code path serves SQLite and PostgreSQL.  Running the ``alembic`` command directly also works.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from moorage.metadata.tables import metadata

config = context.config


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def _standalone() -> None:
    engine = create_async_engine(config.get_main_option("sqlalchemy.url") or "")
    async with engine.begin() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():  # pragma: no cover
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
else:  # pragma: no cover - the plain `alembic` command
    asyncio.run(_standalone())
