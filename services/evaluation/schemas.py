"""Marshmallow schemas of the evaluation API; the OpenAPI document is generated from them."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from services.evaluation.rules import ADVANCEMENT_RULES, KINDS, SECTION_LIMITS
from shared.http import PageQuerySchema, RequestSchema, one_line


class ParticipantQuerySchema(PageQuerySchema):
    opd = fields.Str(load_default=None, validate=validate.Length(max=200))


class ParticipantSchema(Schema):
    nip = fields.Str()
    name = fields.Str()
    email = fields.Str()
    opd = fields.Str()
    position = fields.Str(allow_none=True)
    updated_at = fields.AwareDateTime()


class EvaluatorSchema(Schema):
    id = fields.Str(metadata={"description": "the account id"})
    email = fields.Str()
    name = fields.Str(allow_none=True)
    opd = fields.Str(allow_none=True)


# --- proposals ----------------------------------------------------------------------------------------------


class MemberSchema(RequestSchema):
    name = fields.Str(required=True, validate=[validate.Length(min=1, max=200), one_line])
    position = fields.Str(load_default=None, allow_none=True, validate=[validate.Length(max=200), one_line])


SECTIONS_DESCRIPTION = "The national form's sections and their word limits: " + ", ".join(
    f"`{name}` {limit}" for name, limit in SECTION_LIMITS.items()
)


#: One optional text per section of the form (a draft may leave any empty; submitting needs them all).
SectionsSchema = RequestSchema.from_dict(
    {
        name: fields.Str(
            allow_none=True, validate=validate.Length(max=20_000), metadata={"description": f"at most {limit} words"}
        )
        for name, limit in SECTION_LIMITS.items()
    },
    name="SectionsSchema",
)


class ProposalCreateSchema(RequestSchema):
    title = fields.Str(required=True, validate=[validate.Length(min=1, max=300), one_line])
    category = fields.Str(required=True, validate=[validate.Length(min=1, max=200), one_line])
    started_on = fields.Date(load_default=None, allow_none=True, metadata={"description": "implementation began"})
    members = fields.List(fields.Nested(MemberSchema), load_default=list, validate=validate.Length(max=50))
    sections = fields.Nested(SectionsSchema, load_default=dict, metadata={"description": SECTIONS_DESCRIPTION})
    links = fields.List(
        fields.Url(schemes={"http", "https"}, validate=validate.Length(max=500)),
        load_default=list,
        validate=validate.Length(max=20),
    )


class ProposalChangeSchema(ProposalCreateSchema):
    """``PATCH``: any of the fields of a new proposal; those left out stay as they are."""

    title = fields.Str(validate=[validate.Length(min=1, max=300), one_line])
    category = fields.Str(validate=[validate.Length(min=1, max=200), one_line])
    started_on = fields.Date(allow_none=True)
    members = fields.List(fields.Nested(MemberSchema), validate=validate.Length(max=50))
    sections = fields.Nested(SectionsSchema)
    links = fields.List(fields.Url(schemes={"http", "https"}), validate=validate.Length(max=20))


class TeamResultSchema(Schema):
    round_id = fields.Str()
    round_name = fields.Str()
    rank = fields.Int(allow_none=True)
    advanced = fields.Bool(allow_none=True)
    reason = fields.Str(allow_none=True)
    final = fields.Bool()
    objection_deadline = fields.AwareDateTime(allow_none=True)


class ProposalSchema(Schema):
    id = fields.Str()
    status = fields.Str(metadata={"description": "`draft` or `submitted`"})
    programme_id = fields.Str(allow_none=True)
    opd = fields.Str()
    title = fields.Str()
    category = fields.Str()
    started_on = fields.Date(allow_none=True)
    members = fields.List(fields.Dict(), metadata={"description": "left out for the evaluators of a blind round"})
    sections = fields.Dict(keys=fields.Str(), values=fields.Str())
    word_counts = fields.Dict(keys=fields.Str(), values=fields.Int())
    links = fields.List(fields.Str())
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    submitted_at = fields.AwareDateTime(allow_none=True)
    results = fields.List(
        fields.Nested(TeamResultSchema), metadata={"description": "published rounds (the team and organisers)"}
    )


class ProposalQuerySchema(PageQuerySchema):
    programme_id = fields.Str(load_default=None)
    status = fields.Str(load_default=None, validate=validate.OneOf(["draft", "submitted"]))


# --- rounds ----------------------------------------------------------------------------------------------------


class NameField(fields.Field):
    """A criterion's name: one text, or ``{"id": …, "en": …}``."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and value.strip():
            return {"id": value, "en": value}
        if (
            isinstance(value, dict)
            and value
            and all(k in ("id", "en") and isinstance(v, str) and v.strip() for k, v in value.items())
        ):
            return {"id": value.get("id") or value.get("en"), "en": value.get("en") or value.get("id")}
        raise ValidationError('A name: a text, or {"id": "…", "en": "…"}.')


class CriterionSchema(RequestSchema):
    key = fields.Str(required=True, validate=validate.Regexp(r"\A[a-z][a-z0-9_]{0,39}\Z"))
    name = NameField(required=True, metadata={"description": 'a text or {"id", "en"}'})
    weight = fields.Float(load_default=1.0, validate=validate.Range(min=0, min_inclusive=False, max=1000))
    min = fields.Float(load_default=1, validate=validate.Range(min=-1000, max=1000))
    max = fields.Float(load_default=10, validate=validate.Range(min=-1000, max=1000))
    informational = fields.Bool(load_default=False)


class AdvancementSchema(RequestSchema):
    rule = fields.Str(required=True, validate=validate.OneOf(ADVANCEMENT_RULES))
    n = fields.Int(validate=validate.Range(min=1), metadata={"description": "`top_n`: how many advance"})
    min = fields.Float(metadata={"description": "`threshold`: the lowest ranked score that advances"})

    @validates_schema
    def _needs_its_value(self, data, **_kwargs):
        if data["rule"] == "top_n" and "n" not in data:
            raise ValidationError("top_n needs n.", "n")
        if data["rule"] == "threshold" and "min" not in data:
            raise ValidationError("threshold needs min.", "min")


class RoundCreateSchema(RequestSchema):
    name = fields.Str(required=True, validate=[validate.Length(min=1, max=200), one_line])
    programme_id = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=36))
    kind = fields.Str(required=True, validate=validate.OneOf(KINDS))
    criteria = fields.List(
        fields.Nested(CriterionSchema),
        load_default=None,
        validate=validate.Length(min=1, max=30),
        metadata={"description": "optional: the five national criteria (or the administrative checklist)"},
    )
    evaluators_per_proposal = fields.Int(required=True, validate=validate.Range(min=1, max=20))
    blind = fields.Bool(load_default=False)
    advancement = fields.Nested(
        AdvancementSchema, load_default=None, metadata={"description": "default: the organisers decide"}
    )
    ranked_by = fields.Str(load_default="normalised", validate=validate.OneOf(["normalised", "mean"]))
    objection_days = fields.Int(
        load_default=0, validate=validate.Range(min=0, max=60), metadata={"description": "masa sanggah"}
    )


class CriterionOutSchema(Schema):
    key = fields.Str()
    name = fields.Dict()
    weight = fields.Float()
    min = fields.Float()
    max = fields.Float()
    informational = fields.Bool()


class RoundSchema(Schema):
    id = fields.Str()
    name = fields.Str()
    programme_id = fields.Str(allow_none=True)
    sequence = fields.Int()
    kind = fields.Str()
    criteria = fields.List(fields.Nested(CriterionOutSchema))
    evaluators_per_proposal = fields.Int()
    blind = fields.Bool()
    advancement = fields.Dict()
    ranked_by = fields.Str()
    objection_days = fields.Int()
    state = fields.Str(metadata={"description": "`open` or `closed`"})
    proposals = fields.Int(metadata={"description": "how many proposals the round took"})
    created_at = fields.AwareDateTime()
    closed_at = fields.AwareDateTime(allow_none=True)
    provisional_at = fields.AwareDateTime(allow_none=True)
    objection_deadline = fields.AwareDateTime(allow_none=True)
    final_at = fields.AwareDateTime(allow_none=True)


class RoundQuerySchema(PageQuerySchema):
    programme_id = fields.Str(load_default=None)


class DecisionSchema(RequestSchema):
    proposal_id = fields.Str(required=True)
    advanced = fields.Bool(required=True)
    reason = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class EntrySchema(Schema):
    proposal_id = fields.Str()
    rank = fields.Int(allow_none=True)
    score = fields.Float(allow_none=True)
    advanced = fields.Bool(allow_none=True)
    reason = fields.Str(allow_none=True)


# --- assignments and evaluations ----------------------------------------------------------------------------------


class AssignRequestSchema(RequestSchema):
    auto = fields.Bool(load_default=False)
    evaluator_ids = fields.List(
        fields.Str(), load_default=None, metadata={"description": "auto: the pool (default: every evaluator)"}
    )
    proposal_id = fields.Str()
    evaluator_id = fields.Str()

    @validates_schema
    def _one_way(self, data, **_kwargs):
        if not data["auto"]:
            missing = {k: ["Required unless auto is true."] for k in ("proposal_id", "evaluator_id") if k not in data}
            if missing:
                raise ValidationError(missing)


class AssignmentProposalSchema(Schema):
    id = fields.Str()
    title = fields.Str()
    category = fields.Str()
    status = fields.Str()


class OwnEvaluationSchema(Schema):
    scores = fields.Dict(keys=fields.Str(), values=fields.Float())
    reasons = fields.Dict(keys=fields.Str(), values=fields.Str())
    comment = fields.Str(allow_none=True)
    revision = fields.Int()
    submitted_at = fields.AwareDateTime()


class AssignmentSchema(Schema):
    id = fields.Str()
    round_id = fields.Str()
    round_name = fields.Str()
    round_state = fields.Str()
    proposal = fields.Nested(AssignmentProposalSchema)
    evaluator_id = fields.Str()
    assigned_at = fields.AwareDateTime()
    evaluation = fields.Nested(
        OwnEvaluationSchema, allow_none=True, metadata={"description": "the caller's own, never anyone else's"}
    )


class AssignmentQuerySchema(PageQuerySchema):
    round_id = fields.Str(load_default=None)


class EvaluationRequestSchema(RequestSchema):
    scores = fields.Dict(
        keys=fields.Str(validate=validate.Length(max=40)),
        values=fields.Float(allow_nan=False),
        required=True,
        metadata={"description": "criterion key → score (a checklist: 1 pass, 0 fail)"},
    )
    reasons = fields.Dict(
        keys=fields.Str(validate=validate.Length(max=40)),
        values=fields.Str(validate=validate.Length(max=2000)),
        load_default=dict,
        metadata={"description": "checklist: the reason of each failed item"},
    )
    comment = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=10_000))


class ConflictRequestSchema(RequestSchema):
    proposal_id = fields.Str(required=True)
    reason = fields.Str(required=True, validate=validate.Length(min=3, max=2000))


class ConflictSchema(Schema):
    proposal_id = fields.Str()
    reason = fields.Str()
    withdrawn_assignments = fields.Int()


# --- results and objections --------------------------------------------------------------------------------------


class RankedSchema(Schema):
    proposal_id = fields.Str()
    rank = fields.Int()
    mean = fields.Float(allow_none=True)
    median = fields.Float(allow_none=True)
    spread = fields.Float(allow_none=True)
    normalised = fields.Float(allow_none=True)
    evaluations = fields.Int()


class AgreementSchema(Schema):
    krippendorff_alpha_interval = fields.Float(allow_none=True)


class LeniencySchema(Schema):
    evaluator_id = fields.Str()
    leniency = fields.Float(allow_none=True)


class ResultsSchema(Schema):
    ranking = fields.List(fields.Nested(RankedSchema))
    agreement = fields.Nested(AgreementSchema)
    evaluators = fields.List(fields.Nested(LeniencySchema))
    flagged = fields.List(fields.Str())


class ObjectionRequestSchema(RequestSchema):
    round_id = fields.Str(required=True)
    text = fields.Str(required=True, validate=validate.Length(min=3, max=5000))


class ObjectionAnswerSchema(RequestSchema):
    decision = fields.Str(required=True, validate=validate.OneOf(["upheld", "rejected"]))
    reason = fields.Str(required=True, validate=validate.Length(min=3, max=5000))


class ObjectionSchema(Schema):
    id = fields.Str()
    round_id = fields.Str()
    proposal_id = fields.Str()
    text = fields.Str()
    filed_at = fields.AwareDateTime()
    state = fields.Str()
    answer = fields.Str(allow_none=True)
    answered_at = fields.AwareDateTime(allow_none=True)
