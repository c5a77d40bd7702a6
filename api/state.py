"""What the whole application shares: settings, database, keys. Built once per app, not per request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from api.auth.keys import KeyRing
from api.auth.providers import IdentityProvider, build_providers
from api.auth.tokens import TokenCodec
from api.db import Database
from api.filings.bankaccounts import BankAccountVault
from api.notifications.broker import Broker, build_broker
from api.observability import Metrics
from api.pagination import CursorCodec
from api.people.idnumbers import IdNumberVault
from api.secrets import DataKeys
from api.settings import Settings
from api.vouchers.keys import VoucherKeys


@dataclass
class AppState:
    settings: Settings
    db: Database
    keys: KeyRing
    tokens: TokenCodec
    providers: dict[str, IdentityProvider]
    id_numbers: IdNumberVault
    cursors: CursorCodec
    metrics: Metrics
    voucher_keys: VoucherKeys
    bank_accounts: BankAccountVault
    broker: Broker
    """Live notifications: started and stopped by the app's lifespan (api/notifications/broker.py)."""

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        key_dir = settings.resolved_key_dir
        allow_demo = not settings.production
        keys = KeyRing.open(key_dir, allow_demo=allow_demo)
        explicit = settings.data_key.get_secret_value() if settings.data_key else None
        data_keys = DataKeys.load(key_dir, explicit=explicit, allow_create=allow_demo)
        db = Database(settings)
        return cls(
            settings=settings,
            db=db,
            keys=keys,
            tokens=TokenCodec(
                keys,
                issuer=settings.issuer,
                access_ttl=timedelta(seconds=settings.access_token_ttl_s),
                refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_s),
            ),
            providers=build_providers(settings),
            id_numbers=IdNumberVault(data_keys),
            cursors=CursorCodec(data_keys.cursor_mac),
            metrics=Metrics(),
            voucher_keys=VoucherKeys(keys),
            bank_accounts=BankAccountVault(data_keys.bank_account_encryption),
            broker=build_broker(db.engine),
        )
