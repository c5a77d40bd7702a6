"""Which server addresses the terminal trusts its channel to.

Everything the terminal verifies offline rests on what pull brings over this channel: the issuer keys
(a forged key makes forged vouchers verify, showing made-up identities), the revocation list and the
`terminal_revoked` answer. Over plain http anyone on the path (the village's router, the county's
network) can change them, so plain http is accepted only to this machine itself (tests, the demo, a
local reverse proxy), or when the operator says so explicitly with `enrol --insecure-http`.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

INSECURE_HTTP_MESSAGE = (
    "服务器地址 {server} 使用明文 http：途中任何人都可以篡改同步的数据，"
    "伪造医保码签发密钥（离线核验时显示假身份）或伪造“终端已停用”的答复。"
)


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback  # 127.0.0.0/8 and ::1
    except ValueError:
        return False


def insecure_http(server: str) -> bool:
    """True for a plain-http address of another machine (the risk above); https and loopback are not."""
    try:
        parts = urlsplit(server)
    except ValueError:
        return True
    return parts.scheme.lower() == "http" and not is_loopback_host(parts.hostname)


def insecure_http_warning(server: str) -> str | None:
    """The operator's warning for a stored address, or None if it is not plain http to another host."""
    if not insecure_http(server):
        return None
    return INSECURE_HTTP_MESSAGE.format(server=server) + "请尽快改用 https:// 地址重新登记。"
