"""Attachments of filings over REST (issue 11 item 2) and invoice numbers used once: types sniffed by
content, size and count limits, checksums, who may download, and uniqueness under concurrency."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from sqlalchemy import select
from sqlmodel import col

from api.family.models import Permission
from api.filings import service
from api.filings.models import FilingAttachment
from api.filings.storage import LocalDirectoryStore
from api.state import AppState
from tests.api import familyworld as world
from tests.api import filingworld as fw
from tests.api.filingworld import CREATE, FILING, SUBMIT, WITHDRAW, create_input, data
from tests.conftest import GraphQLClient, error_codes


async def draft(who: fw.Resident, kind: str = "REIMBURSEMENT", **fields: Any) -> dict[str, Any]:
    return data(await who(CREATE, create_input(kind, fw.VALID[kind](**fields))))["createFiling"]  # type: ignore[operator]


async def test_an_upload_is_sniffed_checksummed_stored_and_downloaded(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql)
    filing = await draft(who)
    # A PNG sent as "invoice.pdf" with a PDF content type is kept as what it is.
    response = await fw.upload(
        gql, who.token, filing["id"], "invoice", fw.PNG, "invoice.pdf", "application/pdf"
    )
    assert response.status_code == 201, response.text
    attachment = response.json()["attachment"]
    assert attachment["contentType"] == "image/png" and attachment["sizeBytes"] == len(fw.PNG)
    assert (
        attachment["sha256"] == hashlib.sha256(fw.PNG).hexdigest() and attachment["filename"] == "invoice.pdf"
    )
    pdf = await fw.upload(gql, who.token, filing["id"], "expense_list")
    assert pdf.status_code == 201 and pdf.json()["attachment"]["contentType"] == "application/pdf"

    shown = data(await who(FILING, {"id": filing["id"]}))["filing"]["attachments"]
    assert [a["material"] for a in shown] == ["invoice", "expense_list"]
    got = await gql.http.get(attachment["downloadPath"], headers={"authorization": f"Bearer {who.token}"})
    assert got.status_code == 200 and got.content == fw.PNG
    assert got.headers["content-type"] == "image/png" and got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["x-checksum-sha256"] == attachment["sha256"]

    async with state.db.session() as session:
        row = await session.get(FilingAttachment, int(attachment["id"]))
    assert row is not None
    stored = state.settings.data_dir / "attachments" / row.storage_key
    assert stored.read_bytes() == fw.PNG  # the local-directory store under the data dir


async def test_content_that_is_not_an_image_or_pdf_is_refused_whatever_it_claims(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql)
    filing = await draft(who)
    for content in (
        b"Hello, this is plain text pretending.",
        b"<html><script>alert(1)</script></html>",
        b"PK\x03\x04zip",
    ):
        response = await fw.upload(
            gql, who.token, filing["id"], "invoice", content, "invoice.pdf", "application/pdf"
        )
        assert response.status_code == 422, response.text
        assert (
            response.json()["error"]["code"] == "BAD_USER_INPUT"
            and response.json()["error"]["field"] == "file"
        )
    empty = await fw.upload(gql, who.token, filing["id"], "invoice", b"", "x.pdf")
    assert empty.status_code == 422
    wrong = await fw.upload(gql, who.token, filing["id"], "birth_certificate")
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "material"
    no_file = await gql.http.post(
        f"/filings/{filing['id']}/attachments",
        params={"material": "invoice"},
        data={"other": "x"},
        headers={"authorization": f"Bearer {who.token}"},
    )
    assert no_file.status_code in (400, 422) and "error" in no_file.json()
    async with state.db.session() as session:
        count = (
            await session.execute(
                select(col(FilingAttachment.id)).where(col(FilingAttachment.filing_id) == int(filing["id"]))
            )
        ).all()
    assert count == []


async def test_a_50_mb_upload_is_a_413_without_being_read(state: AppState, gql: GraphQLClient) -> None:
    who = await fw.resident(state, gql)
    filing = await draft(who)
    big = b"%PDF-1.4\n" + b"0" * (50 * 1024 * 1024)
    response = await fw.upload(gql, who.token, filing["id"], "invoice", big, "big.pdf")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

    sent = 0

    async def stream() -> AsyncIterator[bytes]:  # no Content-Length: cut off once past the bound
        nonlocal sent
        boundary = b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.pdf"\r\n\r\n%PDF-1.4\n'
        yield boundary
        for _ in range(50):
            sent += 1
            yield b"0" * (1024 * 1024)

    streamed = await gql.http.post(
        f"/filings/{filing['id']}/attachments",
        params={"material": "invoice"},
        content=stream(),
        headers={"authorization": f"Bearer {who.token}", "content-type": "multipart/form-data; boundary=x"},
    )
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    # Just past the attachment limit but inside the route's body bound: refused by the file's size.
    over = b"%PDF-1.4\n" + b"0" * (service.MAX_ATTACHMENT_BYTES - 8)
    response = await fw.upload(gql, who.token, filing["id"], "invoice", over, "over.pdf")
    assert response.status_code == 413 and response.json()["error"]["field"] == "file"
    # Other routes keep their 1 MB bound.
    graphql = await gql.http.post(
        "/graphql",
        content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
        headers={"content-type": "application/json"},
    )
    assert graphql.status_code == 413


async def test_too_many_attachments_and_uploads_after_submission_are_refused(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql)
    filing = await draft(who, "CROSS_REGION", registrationType="long_term_residence", endOn=fw.days(400))
    for i in range(service.MAX_ATTACHMENTS):
        response = await fw.upload(
            gql, who.token, filing["id"], "residence_proof", fw.PDF + str(i).encode(), f"p{i}.pdf"
        )
        assert response.status_code == 201, response.text
    one_more = await fw.upload(gql, who.token, filing["id"], "residence_proof")
    assert one_more.status_code == 409 and one_more.json()["error"]["reason"] == "too_many_attachments"

    other = await draft(who, "CROSS_REGION", registrationType="long_term_residence", endOn=fw.days(400))
    assert (await fw.upload(gql, who.token, other["id"], "residence_proof")).status_code == 201
    data(await who(fw.SUBMIT, {"id": other["id"]}))
    late = await fw.upload(gql, who.token, other["id"], "residence_proof")
    assert late.status_code == 409 and late.json()["error"]["code"] == "CONFLICT"


async def test_download_only_by_the_filer_their_family_with_permission_and_reviewers(
    state: AppState, gql: GraphQLClient
) -> None:
    owner = await fw.resident(state, gql, age=75)
    filing = await draft(owner, "CHRONIC_DISEASE")
    uploaded = (await fw.upload(gql, owner.token, filing["id"], "diagnosis_proof")).json()["attachment"]
    path = uploaded["downloadPath"]

    async def get(token: str | None) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return await gql.http.get(path, headers=headers)

    holder = await fw.resident(state, gql)
    await world.link(state, holder.member, owner.member, {Permission.FILE_ON_BEHALF})
    reader = await fw.resident(state, gql)
    await world.link(state, reader.member, owner.member, {Permission.READ_RECORDS})  # no file-on-behalf
    stranger = await fw.resident(state, gql)
    staff = await fw.reviewer(state, gql)
    assert (await get(owner.token)).status_code == 200
    assert (await get(holder.token)).status_code == 200
    assert (await get(staff.token)).status_code == 200
    assert (await get(stranger.token)).status_code == 404
    assert (await get(reader.token)).status_code == 404
    assert (await get(None)).status_code == 401
    elsewhere = await gql.http.get(
        f"/filings/{filing['id']}/attachments/{int(uploaded['id']) + 10_000}",
        headers={"authorization": f"Bearer {owner.token}"},
    )
    assert elsewhere.status_code == 404
    # Nor can a stranger upload to it.
    refused = await fw.upload(gql, stranger.token, filing["id"], "diagnosis_proof")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "NOT_FOUND"
    unauthenticated = await gql.http.post(
        f"/filings/{filing['id']}/attachments",
        params={"material": "invoice"},
        files={"file": ("a.pdf", fw.PDF)},
    )
    assert unauthenticated.status_code == 401


async def test_the_local_store_is_atomic_and_keyed(tmp_path: Any) -> None:
    import io

    store = LocalDirectoryStore(tmp_path)
    await store.put("12/" + "a" * 32, io.BytesIO(b"x" * 300_000))
    chunks = [c async for c in store.read("12/" + "a" * 32)]
    assert b"".join(chunks) == b"x" * 300_000 and len(chunks) > 1
    assert not [p for p in (tmp_path / "12").iterdir() if p.name.startswith(".upload-")]
    for bad in ("../etc/passwd", "12/../../x", "12/ZZ"):
        try:
            await store.put(bad, io.BytesIO(b""))
        except ValueError:
            continue
        raise AssertionError(bad)
    await store.delete("12/" + "a" * 32)
    assert not (tmp_path / "12" / ("a" * 32)).exists()


# ----------------------------------------------------------------------------------- invoices


async def test_an_invoice_is_used_in_one_filing_only(state: AppState, gql: GraphQLClient) -> None:
    who = await fw.resident(state, gql)
    shared = fw.visit()
    first = await fw.submitted(state, who, "REIMBURSEMENT", fw.reimbursement(visits=[shared]))
    other = await fw.resident(state, gql)
    body = await other(
        CREATE,
        create_input(
            "REIMBURSEMENT",
            fw.reimbursement(
                visits=[fw.visit(), {**shared, "invoiceNumber": shared["invoiceNumber"].lower()}]
            ),
        ),
    )
    assert error_codes(body) == ["CONFLICT"]
    assert body["errors"][0]["extensions"]["field"] == "input.fields.visits[1].invoiceNumber"
    # Freed when the filing that held it ends without payment.
    data(await who(WITHDRAW, {"id": first["id"]}))
    assert "errors" not in await other(
        CREATE, create_input("REIMBURSEMENT", fw.reimbursement(visits=[shared]))
    )


async def test_an_invoice_filed_twice_at_once_is_taken_once(state: AppState, gql: GraphQLClient) -> None:
    """Concurrent submissions (separate connections on PostgreSQL): the primary key decides, not a
    look-up. Drafts hold no invoice, so all four drafts exist; one submission takes it."""
    people = [await fw.resident(state, gql) for _ in range(4)]
    shared = fw.visit()
    drafts = [
        data(await p(CREATE, create_input("REIMBURSEMENT", fw.reimbursement(visits=[shared]))))[
            "createFiling"
        ]
        for p in people
    ]
    for p, d in zip(people, drafts, strict=True):
        for material in d["requiredMaterials"]:
            assert (await fw.upload(gql, p.token, d["id"], material["code"])).status_code == 201
    bodies = await asyncio.gather(*(p(SUBMIT, {"id": d["id"]}) for p, d in zip(people, drafts, strict=True)))
    outcomes = sorted("ok" if "errors" not in b else error_codes(b)[0] for b in bodies)
    assert outcomes == ["CONFLICT"] * 3 + ["ok"], bodies
