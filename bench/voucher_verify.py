"""Voucher verification throughput (issue 5): verifications per second on one core, pure Python.

Also prints the size of each code form and the QR version it needs at error-correction level M.
Run: .venv/bin/python bench/voucher_verify.py [--n 20000] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import cryptography
import qrcode
from qrcode.constants import ERROR_CORRECT_M

from sync.vouchers import (
    InMemoryReplayGuard,
    RevocationList,
    b45decode,
    compose_offline_code,
    derive_kid,
    issue_device_certificate,
    issue_online_code,
    new_ref,
    private_key_from_seed,
    verify_code,
)

NOW = 1_780_000_000


def qr_version(text: str) -> int:
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M)
    qr.add_data(text)
    qr.make(fit=True)
    return int(qr.version)


def rate(n: int, fn: Callable[[int], object]) -> float:
    fn(0)  # warm up
    start = time.perf_counter()
    for i in range(1, n + 1):
        fn(i)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000, help="verifications per measurement")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    issuer = private_key_from_seed(b"\x01" * 32)
    kid = derive_kid(issuer.public_key())
    keys = {kid: issuer.public_key()}
    # A realistic revocation list: thousands of entries (set lookups, so size hardly matters).
    revocations = RevocationList.build(
        1,
        cert_serials=[new_ref() for _ in range(5000)],
        link_refs=[new_ref() for _ in range(5000)],
        person_refs=[new_ref() for _ in range(5000)],
    )
    device = private_key_from_seed(b"\x02" * 32)

    def codes(form: str, count: int, link: bool = True) -> list[str]:
        link_ref = new_ref() if link else None
        person = new_ref()
        if form == "online":
            return [issue_online_code(issuer, kid, person, link_ref, NOW) for _ in range(count)]
        cert = issue_device_certificate(issuer, kid, device.public_key(), person, link_ref, NOW - 3600)
        return [compose_offline_code(cert, device, NOW, i % 65536) for i in range(count)]

    sizes: list[dict[str, Any]] = []
    for form in ("online", "offline"):
        for link in (False, True):
            code = codes(form, 1, link)[0]
            sizes.append(
                {
                    "form": form,
                    "family_link": link,
                    "bytes": len(b45decode(code[4:])),
                    "chars": len(code),
                    "qr_version_M": qr_version(code),
                }
            )

    rates: dict[str, float] = {}
    for form in ("online", "offline"):
        one = codes(form, 1)[0]

        def same_code(_i: int, c: str = one) -> object:
            return verify_code(c, issuer_keys=keys, revocations=revocations, now=NOW)

        rates[f"{form}, same code, no replay store"] = rate(args.n, same_code)
        distinct = codes(form, args.n + 1)
        guard = InMemoryReplayGuard(max_entries=args.n + 10, clock=lambda: NOW)

        def with_guard(i: int, d: list[str] = distinct, g: InMemoryReplayGuard = guard) -> object:
            r = verify_code(d[i], issuer_keys=keys, revocations=revocations, now=NOW, replay_guard=g)
            assert r.valid
            return r

        rates[f"{form}, distinct codes, in-memory replay store"] = rate(args.n, with_guard)

    env = {
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or "?",
    }
    if args.json:
        print(json.dumps({"env": env, "sizes": sizes, "per_second_one_core": rates}, indent=2))
        return
    print(f"python {env['python']}, cryptography {env['cryptography']}, {env['machine']}")
    print(f"{'form':8} {'link':5} {'bytes':>5} {'chars':>5} {'QR-M':>4}")
    for s in sizes:
        yes_no = "yes" if s["family_link"] else "no"
        print(f"{s['form']:8} {yes_no:5} {s['bytes']:5} {s['chars']:5} {s['qr_version_M']:4}")
    for name, per_s in rates.items():
        print(f"{per_s:10,.0f} verifications/s  {name}")


if __name__ == "__main__":
    main()
