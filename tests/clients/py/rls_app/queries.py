"""Application code: plain ORM queries, with no tenant filter and no tenant listener.

Which tenant's rows they see is decided by the RLS policies and by whoever sets
app.current_tenant: rlsproxy from the token, or (the replaced pattern) an event
listener in the application.
"""

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Document, Tenant, User


def document_rows(session: Session) -> list[tuple[int, str]]:
    """(tenant_id, title) of every visible document."""
    return [(d.tenant_id, d.title) for d in session.scalars(select(Document).order_by(Document.id))]


def user_names(session: Session) -> list[str]:
    return list(session.scalars(select(User.name).order_by(User.id)))


def tenant_names(session: Session) -> list[str]:
    return list(session.scalars(select(Tenant.name).order_by(Tenant.id)))


def add_document(session: Session, tenant_id: int, title: str) -> int:
    doc = Document(tenant_id=tenant_id, title=title)
    session.add(doc)
    session.flush()
    return doc.id
