"""Placeholder replaced below."""

from flask_smorest import Blueprint

blp = Blueprint("org", __name__, url_prefix="/api/v1/org")
