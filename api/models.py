"""Every capability's tables, imported in one place so Alembic and tests see the whole metadata."""

from api.auth import models as auth_models
from api.dbtypes import metadata
from api.people import models as people_models

__all__ = ["auth_models", "metadata", "people_models"]
