"""The organisation (组织): units (单位), people (人员), role assignments (角色), CSV import.

Anyone signed in may read; only admins (系统管理员) may change. Codes are unique: a second
unit or person with a taken code, or a role a person already holds, is refused with 422
and the field at fault — checked first, and caught again if a parallel request wins.
"""

from __future__ import annotations

from dataclasses import asdict

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from workflows.engine import utcnow
from workflows.messages import msg
from workflows.spec import NAME, NAME_MSG
from workflows.vocab import ORG_ROLES, TIERS

from ..auth import door, viewer
from ..limits import large_body
from .schemas import Id, PageQuery, RecordDate

blp = Blueprint("org", __name__, url_prefix="/api/v1/org",
                description="The organisation (组织): units (单位), people (人员), roles (角色)")
MAX_CSV = 5_000_000  # characters; a province's people fit many times over


# --------------------------------------------------------------------------- schemas


class Trimmed(fields.String):
    """A string without surrounding spaces, as the CSV import reads its cells."""

    def __init__(self, *, max_length: int, min_length: int = 0, **kwargs):
        super().__init__(validate=[validate.Length(min=min_length, max=max_length)],
                         **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).strip()


class UnitIn(Schema):
    code = Trimmed(required=True, min_length=1, max_length=64)
    name = Trimmed(required=True, min_length=1, max_length=200)
    parent_id = Id(load_default=None, allow_none=True,
                               metadata={"description": "null for a root unit"})


class UnitOut(Schema):
    id = fields.Integer(required=True)
    code = fields.String(required=True)
    name = fields.String(required=True)
    parent_id = fields.Integer(allow_none=True)
    path = fields.String(required=True, metadata={
        "description": "Ids from the root down to this unit, e.g. /1/4/9/"})


class PersonQuery(PageQuery):
    unit_id = Id(metadata={"description": "This unit and its sub-units"})
    q = fields.String(validate=[validate.Length(min=1, max=100)],
                      metadata={"description": "Text in the name or the code"})
    active = fields.Boolean()


class PersonIn(Schema):
    code = Trimmed(required=True, min_length=1, max_length=64)
    name = Trimmed(required=True, min_length=1, max_length=100)
    unit_id = Id(required=True)
    tier = fields.String(load_default="staff", validate=validate.OneOf(TIERS), metadata={
        "description": "chief (正职) | deputy (副职) | staff (一般干部): the pool of 同级人员"})
    rank = Trimmed(allow_none=True, max_length=64,
                   metadata={"description": "职级, e.g. 一级主任科员"})
    rank_since = RecordDate(allow_none=True)
    post = Trimmed(allow_none=True, max_length=200,
                   metadata={"description": "职务"})


class PersonPatch(Schema):
    name = Trimmed(min_length=1, max_length=100)
    unit_id = Id()
    tier = fields.String(validate=validate.OneOf(TIERS))
    rank = Trimmed(allow_none=True, max_length=64)
    rank_since = RecordDate(allow_none=True)
    post = Trimmed(allow_none=True, max_length=200)
    active = fields.Boolean()


class PersonOut(Schema):
    id = fields.Integer(required=True)
    code = fields.String(required=True)
    name = fields.String(required=True)
    unit_id = fields.Integer(required=True)
    unit_name = fields.String(required=True)
    tier = fields.String(required=True)
    rank = fields.String(allow_none=True)
    rank_since = fields.Date(allow_none=True)
    post = fields.String(allow_none=True)
    active = fields.Boolean(required=True)


class PersonList(Schema):
    items = fields.List(fields.Nested(PersonOut), required=True)
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)


class RoleQuery(Schema):
    person_id = Id()
    unit_id = Id(metadata={"description": "Assignments in exactly this unit"})
    role = fields.String(validate=[validate.Length(min=1, max=64)])


class RoleIn(Schema):
    person_id = Id(required=True)
    role = fields.String(required=True, validate=[validate.Length(min=1, max=64)],
                         metadata={
        "description": f"In a unit: one of {', '.join(ORG_ROLES)}; with unit_id null: the "
                       "name of a group (e.g. hr-office)"})
    unit_id = Id(load_default=None, allow_none=True,
                 metadata={"description": "null for a group (no unit)"})

    @validates_schema
    def _role_fits_unit(self, data, **kwargs):
        role = data["role"]
        if data["unit_id"] is not None and role not in ORG_ROLES:
            raise ValidationError(msg("org.role_not_in_unit", role=role, roles=list(ORG_ROLES)),
                                  "role")
        if data["unit_id"] is None and role in ORG_ROLES:
            raise ValidationError(msg("org.role_needs_unit", role=role), "unit_id")
        if data["unit_id"] is None and not NAME.match(role):
            raise ValidationError(msg("org.group_name", rule=NAME_MSG), "role")


class RoleOut(Schema):
    id = fields.Integer(required=True)
    person_id = fields.Integer(required=True)
    person_name = fields.String(required=True)
    role = fields.String(required=True)
    unit_id = fields.Integer(allow_none=True, metadata={"description": "null for a group"})
    unit_name = fields.String(allow_none=True)


class ImportIn(Schema):
    csv = fields.String(required=True, validate=[validate.Length(min=1, max=MAX_CSV)],
                        metadata={"description": "UTF-8 CSV text with a header row: "
                                                 "unit_code, unit_name, parent_unit_code, "
                                                 "person_code, name, tier, rank, rank_since, "
                                                 "post, roles, username"})


class ImportOut(Schema):
    rows = fields.Integer(required=True)
    units_created = fields.Integer(required=True)
    people_created = fields.Integer(required=True)
    people_updated = fields.Integer(required=True)
    roles_added = fields.Integer(required=True)
    users_created = fields.Integer(required=True)


# --------------------------------------------------------------------------- views


@blp.route("/units")
class Units(MethodView):
    @blp.response(200, UnitOut(many=True))
    def get(self):
        """Every unit (单位).

        Ordered by id; `path` (ids from the root down) places each in the tree."""
        return door().org.units()

    @blp.arguments(UnitIn)
    @blp.response(201, UnitOut)
    def post(self, body):
        """Create a unit (新建单位); admins only.

        Under `parent_id`, or a root unit. 422 when the code is taken, 404 when the parent
        does not exist."""
        return door().org.create_unit(viewer=viewer(), **body)


@blp.route("/units/<int:unit_id>")
class UnitDetail(MethodView):
    @blp.response(200, UnitOut)
    def get(self, unit_id: int):
        """One unit (单位).

        404 when it does not exist."""
        return door().org.unit(unit_id=unit_id)


@blp.route("/people")
class People(MethodView):
    @blp.arguments(PersonQuery, location="query")
    @blp.response(200, PersonList)
    def get(self, args):
        """People (人员), ordered by code, paginated with the total.

        `unit_id` takes the unit and its sub-units; `q` is text in the name or code."""
        items, total = door().org.people(filters=args)
        return {"items": items, "total": total, "page": args["page"],
                "per_page": args["per_page"]}

    @blp.arguments(PersonIn)
    @blp.response(201, PersonOut)
    def post(self, body):
        """Create a person (新建人员); admins only.

        422 when the code is taken, 404 when the unit does not exist."""
        return door().org.create_person(viewer=viewer(), **body)


@blp.route("/people/<int:person_id>")
class PersonDetail(MethodView):
    @blp.response(200, PersonOut)
    def get(self, person_id: int):
        """One person (人员).

        404 when they do not exist."""
        return door().org.person(person_id=person_id)

    @blp.arguments(PersonPatch)
    @blp.response(200, PersonOut)
    def patch(self, body, person_id: int):
        """Change a person (修改人员); admins only.

        Name, unit, tier (同级 pool), rank (职级), post, active; never the code, by which
        imports recognise them. Open cases keep the unit they started in.

        `active: false` (停用) revokes every token and session of the person's account at
        once, refuses their logins and drops their roles from every lookup (queues,
        actions, notifications) and gives back the steps they had claimed (认领, each a
        release in the case's history); `active: true` restores the roles, not the tokens.
        Recorded in the security log. 409 for the last active admin."""
        return door().org.update_person(viewer=viewer(), person_id=person_id, changes=body,
                                        now=utcnow())


@blp.route("/roles")
class Roles(MethodView):
    @blp.arguments(RoleQuery, location="query")
    @blp.response(200, RoleOut(many=True))
    def get(self, args):
        """Role assignments (角色).

        Who is leader (领导), committee (党组/机关), process owner or admin in which unit,
        and who is in which group (unit_id null)."""
        return door().org.roles(**args)

    @blp.arguments(RoleIn)
    @blp.response(201, RoleOut)
    def post(self, body):
        """Assign a role (分配角色); admins only.

        In a unit, or in a group with `unit_id` null. 422 when the person holds it already."""
        return door().org.add_role(viewer=viewer(), **body)


@blp.route("/roles/<int:assignment_id>")
class RoleDetail(MethodView):
    @blp.response(204)
    def delete(self, assignment_id: int):
        """Remove a role assignment (撤销角色); admins only.

        The last admin assignment stays (409): nobody could manage the organisation."""
        door().org.remove_role(viewer=viewer(), assignment_id=assignment_id)


@blp.route("/import")
@large_body
class Import(MethodView):
    @blp.arguments(ImportIn)
    @blp.response(200, ImportOut)
    def post(self, body):
        """Import units, people, roles and accounts from CSV (批量导入); admins only.

        All rows or none: bad rows give 422 with `errors` [{line, message}]."""
        return asdict(door().org.import_people(viewer=viewer(), text=body["csv"]))
