"""Helpers for the filings tests: GraphQL documents, valid fields per kind, fresh residents and reviewers."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlmodel import col

from api.auth.models import Role
from api.pagination import local_today
from api.people.models import InsuredPerson
from api.state import AppState
from tests.api import familyworld as world
from tests.conftest import GraphQLClient

FILING_FIELDS = """id clientId kind kindLabel status statusLabel stage stageLabel personName filedByName
  filedOnBehalf linkId regionCode fields amountFen computation dueOn dueEstimated overdue workingDaysLeft
  claimedByMe claimedByName decisionReason submittedAt decidedAt
  requestedMaterials { code label note } requiredMaterials { code label }
  attachments { id material contentType sizeBytes sha256 downloadPath filename }
  history { action actorRole actorName fromStatus toStatus stage dueOn reason missing { code label note } }"""
CREATE = f"mutation($input: CreateFilingInput!) {{ createFiling(input: $input) {{ {FILING_FIELDS} }} }}"
SUBMIT = (
    f"mutation($id: ID!, $changes: JSON) {{ submitFiling(id: $id, changes: $changes) {{ {FILING_FIELDS} }} }}"
)
WITHDRAW = f"mutation($id: ID!, $reason: String) {{ withdrawFiling(id: $id, reason: $reason) {{ {FILING_FIELDS} }} }}"
CLAIM = f"mutation($id: ID!) {{ claimFiling(id: $id) {{ {FILING_FIELDS} }} }}"
RELEASE = f"mutation($id: ID!) {{ releaseFiling(id: $id) {{ {FILING_FIELDS} }} }}"
DECIDE = f"""mutation($id: ID!, $decision: FilingDecision!, $reason: String, $missing: [MissingItemInput!]) {{
  decideFiling(id: $id, decision: $decision, reason: $reason, missing: $missing) {{ {FILING_FIELDS} }} }}"""
FILING = f"query($id: ID!) {{ filing(id: $id) {{ {FILING_FIELDS} }} }}"
MINE = f"""query($linkId: ID, $first: Int, $after: String) {{ myFilings(linkId: $linkId, first: $first, after: $after) {{
  totalCount pageInfo {{ hasNextPage endCursor }} edges {{ node {{ {FILING_FIELDS} }} }} }} }}"""
QUEUE = """query($filter: ReviewQueueFilter, $first: Int, $after: String) {
  reviewQueue(filter: $filter, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } edges { node { id kind status stage dueOn overdue regionCode claimedByMe } } } }"""

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
    b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
)


def data(body: dict[str, Any]) -> Any:
    assert "errors" not in body, body
    return body["data"]


def today() -> dt.date:
    return local_today()


def days(n: int) -> str:
    return (today() + dt.timedelta(days=n)).isoformat()


def cross_region(**overrides: Any) -> dict[str, Any]:
    return {
        "registrationType": "temporary_trip",
        "destinationRegion": "310104",
        "startOn": days(0),
        "endOn": days(60),
        "reason": "到上海探亲期间就医",
        **overrides,
    }


def chronic(**overrides: Any) -> dict[str, Any]:
    return {
        "diseaseCode": "copd",
        "diagnosingHospital": "凤台县人民医院",
        "diagnosedOn": days(-30),
        "evidence": "肺功能检查报告及诊断证明",
        **overrides,
    }


def bank() -> dict[str, Any]:
    return {"bankName": "中国农业银行凤台支行", "accountName": "测试", "accountNumber": "6228480000123456789"}


def invoice_number() -> str:
    return "FP" + secrets.token_hex(8).upper()


def visit(**overrides: Any) -> dict[str, Any]:
    items = overrides.pop(
        "items",
        [
            {"name": "住院床位费", "amountFen": 150_000, "itemClass": "class_a"},
            {"name": "药品费", "amountFen": 50_000, "itemClass": "class_b", "selfPayPermille": 100},
        ],
    )
    return {
        "visitDate": days(-10),
        "hospitalName": "复旦大学附属中山医院",
        "facilityLevel": "tertiary",
        "region": "310104",
        "category": "general_outpatient",
        "invoiceNumber": invoice_number(),
        "invoiceAmountFen": sum(i["amountFen"] for i in items),
        "items": items,
        **overrides,
    }


def reimbursement(**overrides: Any) -> dict[str, Any]:
    return {"visits": [visit()], "bankAccount": bank(), **overrides}


def maternity(**overrides: Any) -> dict[str, Any]:
    return {
        "employer": "凤台县第一中学",
        "averageMonthlyWageFen": 600_000,
        "leaveStart": days(-40),
        "deliveryDate": days(-30),
        "difficultBirth": False,
        "babies": 1,
        "bankAccount": bank(),
        **overrides,
    }


VALID = {
    "CROSS_REGION": cross_region,
    "CHRONIC_DISEASE": chronic,
    "REIMBURSEMENT": reimbursement,
    "MATERNITY": maternity,
}


def create_input(kind: str, fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"input": {"clientId": str(uuid.uuid4()), "kind": kind, "fields": fields, **extra}}


@dataclass
class Resident:
    member: world.Member
    gql: GraphQLClient

    @property
    def token(self) -> str:
        assert self.member.token is not None
        return self.member.token

    async def __call__(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.gql(query, variables, token=self.token)


async def resident(
    state: AppState, gql: GraphQLClient, *, employee_woman: bool = False, **kw: Any
) -> Resident:
    member = await world.person(state, gender="F" if employee_woman else kw.pop("gender", None), **kw)
    if employee_woman:
        async with state.db.session() as session:
            await session.execute(
                update(InsuredPerson)
                .where(col(InsuredPerson.id) == member.person_id)
                .values(insurance_type="employee")
            )
    return Resident(member, gql)


async def reviewer(state: AppState, gql: GraphQLClient, **kw: Any) -> Resident:
    """A reviewer with a person of their own (so that family conflicts can be tested)."""
    return Resident(await world.person(state, role=Role.REVIEWER, **kw), gql)


async def upload(
    gql: GraphQLClient,
    token: str,
    filing_id: str,
    material: str,
    content: bytes = PDF,
    name: str = "proof.pdf",
    content_type: str = "application/pdf",
) -> Any:
    return await gql.http.post(
        f"/filings/{filing_id}/attachments",
        params={"material": material},
        files={"file": (name, content, content_type)},
        headers={"authorization": f"Bearer {token}"},
    )


async def submitted(
    state: AppState, who: Resident, kind: str, fields: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A filing of `kind` created, given its required materials, and submitted."""
    created = data(await who(CREATE, create_input(kind, fields or VALID[kind]())))["createFiling"]
    for material in created["requiredMaterials"]:
        response = await upload(who.gql, who.token, created["id"], material["code"])
        assert response.status_code == 201, response.text
    return data(await who(SUBMIT, {"id": created["id"]}))["submitFiling"]


async def through_stages(reviewers: list[Resident], filing_id: str) -> dict[str, Any]:
    """Each stage claimed and approved by its own reviewer, until the filing is decided."""
    result: dict[str, Any] = {}
    for r in reviewers:
        data(await r(CLAIM, {"id": filing_id}))
        result = data(await r(DECIDE, {"id": filing_id, "decision": "APPROVE", "reason": "材料齐全"}))[
            "decideFiling"
        ]
        if result["status"] == "APPROVED":
            return result
    return result
