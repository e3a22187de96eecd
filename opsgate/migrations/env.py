"""Alembic environment: always driven from ``Database.migrate`` with an open connection."""

from alembic import context

from opsgate.services.storage.models import Base, is_mapped_schema_object

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `opsgate migrate` or `opsgate serve`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    include_name=lambda name, _type, _parents: is_mapped_schema_object(name),
)
with context.begin_transaction():
    context.run_migrations()
