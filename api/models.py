"""Every capability's tables, imported in one place so Alembic and tests see the whole metadata."""

from api.auth import models as auth_models
from api.dbtypes import metadata
from api.family import models as family_models
from api.filings import models as filing_models
from api.notifications import models as notification_models
from api.people import models as people_models
from api.replication import models as replication_models
from api.settlement import models as settlement_models
from api.terminals import models as terminal_models
from api.vouchers import models as voucher_models

__all__ = [
    "auth_models",
    "family_models",
    "filing_models",
    "metadata",
    "notification_models",
    "people_models",
    "replication_models",
    "settlement_models",
    "terminal_models",
    "voucher_models",
]
