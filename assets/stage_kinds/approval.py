"""`approval`: a reviewer signs off a stage's output before anything that reads it is made.

A pipeline places it after any stage (`inputs: {subject: <stage>}`); every stage
that reads the subject then reads the approval stage too, so it waits for the
verdict and nothing after the subject is made or paid for
(orchestration/pipelines.py). The brief switches it: `approval: auto` (the
default) passes at once; `approval: required` passes only the version of the
subject a reviewer approved (assets/approvals.py: verdicts, the review app,
`studio review`). A variant without one waits: not a failure of the run, and
the other variants go on. The approval sensor resumes it once approved.
"""

import dagster as dg

from assets.approvals import AwaitingApproval, subject_version
from assets.stages import APPROVAL_KIND, APPROVAL_SUBJECT_SLOT, StageCall, StageKind
from resources.manifests import ApprovalDoc, StageOutput


async def approve(call: StageCall):
    subject = call.inputs[APPROVAL_SUBJECT_SLOT]
    version = subject_version(subject)
    subject_stage = call.reviews.pipeline.gate_subject(call.stage) if call.reviews is not None else APPROVAL_SUBJECT_SLOT
    base = {"partition_key": call.partition_key, "subject_stage": subject_stage, "subject_version": version, "mode": call.spec.approval}
    if call.spec.approval != "required":
        return ApprovalDoc(**base), {"decision": "auto", "subject": f"{subject_stage} {version[:12]}"}
    verdict = None if call.reviews is None else await call.off_loop(call.reviews.verdict_for, call.stage, call.partition_key, version)
    if verdict is None:
        raise AwaitingApproval(
            f"waits for a reviewer's verdict on {subject_stage} {version[:12]} "
            f"(the review page, or `studio review approve {call.partition_key}`)"
        )
    if verdict.decision != "approved":
        again = "; being made again" if verdict.regenerate else ""
        raise AwaitingApproval(f"{subject_stage} {version[:12]} rejected by {verdict.reviewer}: {verdict.comment or 'no comment'}{again}")
    metadata = {
        "decision": verdict.decision,
        "reviewer": verdict.reviewer,
        "comment": verdict.comment,
        "subject": f"{subject_stage} {version[:12]}",
        "decided_at": dg.MetadataValue.timestamp(verdict.timestamp),
    }
    return ApprovalDoc(**base, verdict=verdict), metadata


APPROVAL = StageKind(
    name=APPROVAL_KIND,
    description="Waits for a reviewer to approve the stage before it (when the brief says approval: required).",
    inputs={APPROVAL_SUBJECT_SLOT: StageOutput},
    output=ApprovalDoc,
    task=None,
    work=approve,
    kinds=frozenset({"python"}),
    # The brief's approval mode decides what it passes; the other stages do not depend on it.
    fingerprint_extra=lambda brief: brief.approval,
)

KINDS = (APPROVAL,)
