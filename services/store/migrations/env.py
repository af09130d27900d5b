"""Alembic's entry: runs the revisions on the connection ``services.store.migrate`` hands over
(``config.attributes["connection"]``), inside the transaction that opens the ledger."""

from alembic import context

from services.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
