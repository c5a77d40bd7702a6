// Result types of the operations in graphql/operations/ (hand-kept beside them; the pytest
// tests/miniprogram/test_operations.py validates the documents against graphql/schema.graphql).
// Money is integer fen; times are ISO-8601 UTC strings; id numbers are masked by the server.

export interface AuthPayload {
  accessToken: string;
  refreshToken: string;
  expiresIn: number;
}

export interface PageInfo {
  hasNextPage: boolean;
  endCursor: string | null;
}

export interface Connection<T> {
  totalCount: number;
  pageInfo: PageInfo;
  edges: { node: T }[];
}

export interface PersonSummary {
  id: string;
  name: string;
  idNumberMasked: string;
  insuranceType: string;
  insuranceTypeLabel: string;
  regionCode: string;
}

export interface Me extends PersonSummary {
  personalAccount: { balanceFen: number; updatedAt: string } | null;
}

export interface Settlement {
  id: string;
  settledAt: string;
  year: number;
  category: string;
  categoryLabel: string;
  visitScope: string;
  totalFen: number;
  compliantFen: number;
  deductibleFen: number;
  basicFen: number;
  criticalIllnessFen: number;
  assistanceFen: number;
  personalAccountFen: number;
  cashFen: number;
  source: string;
  voided: boolean;
  facility: { id: string; name: string; levelLabel: string };
}

export interface Contribution {
  id: string;
  year: number;
  period: string;
  insuranceType: string;
  paidAt: string;
  amountFen: number;
  subsidyFen: number;
}

export interface AccountFlow {
  id: string;
  occurredAt: string;
  kind: string;
  kindLabel: string;
  amountFen: number;
  balanceAfterFen: number;
}

export interface RelativeRecords extends PersonSummary {
  settlements: { totalCount: number; edges: { node: Settlement }[] };
}

export interface Voucher {
  code: string;
  expiresAt: string;
  kid: string;
  linkId: string | null;
  qrSvg: string;
}

export interface DeviceCertificateInfo {
  /** Base64 of the certificate bytes (SPEC.md section 4). */
  certificate: string;
  serial: string;
  kid: string;
  linkId: string | null;
  notBefore: string;
  notAfter: string;
  revokedAt: string | null;
}

export type LinkPermission = "SHOW_VOUCHER" | "READ_RECORDS" | "FILE_ON_BEHALF";
export type FamilyRelationship = "SPOUSE" | "PARENT" | "CHILD" | "GUARDIAN";
export type FamilyLinkStatus = "PENDING" | "ACTIVE" | "DECLINED" | "REJECTED" | "EXPIRED" | "REMOVED" | "SUPERSEDED";

export interface FamilyLink {
  id: string;
  relationship: FamilyRelationship;
  relationshipLabel: string;
  method: "CONFIRMATION" | "HOUSEHOLD" | "PROXY";
  status: FamilyLinkStatus;
  myRole: "holder" | "relative" | "reviewer";
  holderName: string;
  relativeName: string;
  relativeIdNumberMasked: string;
  permissions: LinkPermission[];
  requestedPermissions: LinkPermission[];
  createdAt: string;
  expiresAt: string | null;
  decidedAt: string | null;
}

export interface RequestFamilyLinkInput {
  relationship: FamilyRelationship;
  name: string;
  idNumber: string;
  permissions?: LinkPermission[];
  proxy?: boolean;
  evidence?: string | null;
}

export type FilingKindCode = "CROSS_REGION" | "CHRONIC_DISEASE" | "REIMBURSEMENT" | "MATERNITY";
export type FilingStatus =
  | "DRAFT"
  | "SUBMITTED"
  | "IN_REVIEW"
  | "NEEDS_MATERIALS"
  | "RESUBMITTED"
  | "APPROVED"
  | "REJECTED"
  | "WITHDRAWN";

export interface Filing {
  id: string;
  clientId: string;
  kind: FilingKindCode;
  kindLabel: string;
  status: FilingStatus;
  statusLabel: string;
  stage: string | null;
  stageLabel: string | null;
  personName: string;
  filedByName: string;
  filedOnBehalf: boolean;
  linkId: string | null;
  fields: Record<string, unknown>;
  amountFen: number | null;
  dueOn: string | null;
  overdue: boolean;
  workingDaysLeft: number | null;
  requestedMaterials: { code: string; label: string; note: string | null }[];
  requiredMaterials: { code: string; label: string }[];
  decisionReason: string | null;
  createdAt: string;
  submittedAt: string | null;
  decidedAt: string | null;
  updatedAt: string;
  attachments: {
    id: string;
    material: string;
    materialLabel: string;
    filename: string;
    sizeBytes: number;
    downloadPath: string;
  }[];
}

export interface FilingKind {
  code: FilingKindCode;
  label: string;
  fields: unknown;
  materials: { code: string; label: string }[];
}

export interface CreateFilingInput {
  /** Made once per filing by the client (a UUID); the SDK fills it in when left out. */
  clientId?: string;
  kind: FilingKindCode;
  fields: Record<string, unknown>;
  linkId?: string | null;
  submit?: boolean;
}

export interface Notification {
  id: string;
  kind: string;
  title: string;
  body: string;
  data: Record<string, unknown>;
  createdAt: string;
  readAt: string | null;
  linkId: string | null;
}
