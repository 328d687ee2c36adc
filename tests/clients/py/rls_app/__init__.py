"""A small multi-tenant SQLAlchemy app: the code that rlsproxy lets run unchanged.

models.py holds the ORM models (the tables of migrations/0001), queries.py the
application code, migrations/ an Alembic environment whose revision creates the
tables and the RLS policies.
"""
