"""The Flask app factory. The HTTP API comes with the service issue; for now the service
answers a health check and shows what the database holds, so a first run can be seen to work.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, jsonify, render_template_string
from sqlalchemy import func, select

from workflows.db import Database
from workflows.engine import Engine
from workflows.models import Case, FlowVersion, Person, Unit

_INDEX = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>civflow 干部人事流程</title>
<style>body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;
color:#1a1a1a}table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ccc;
padding:.4rem;text-align:left}</style></head>
<body><h1>civflow 干部人事流程服务</h1>
<p>数据库 / database: <code>{{ db }}</code> — 单位 {{ units }} 个, 人员 {{ people }} 名,
事项 {{ cases }} 件.</p>
<h2>已发布流程 / Published flows</h2>
<table><tr><th>流程 Flow</th><th>名称 Title</th><th>版本 Version</th><th>发布时间 Published</th></tr>
{% for f in flows %}<tr><td><code>{{ f.flow_id }}</code></td><td>{{ f.title }}</td>
<td>v{{ f.version }}</td><td>{{ f.published_at.strftime('%Y-%m-%d %H:%M') }} UTC</td></tr>
{% else %}<tr><td colspan="4">（无 / none）</td></tr>{% endfor %}</table>
<p><a href="/healthz">/healthz</a></p></body></html>"""


def create_app(db_url: str | None = None, config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(config or {})
    db = Database(db_url)
    app.extensions["civflow"] = Engine(db)

    @app.get("/healthz")
    def healthz():
        try:
            db.ping()
        except Exception as exc:  # noqa: BLE001 - report any database failure as unhealthy
            return jsonify(status="unavailable", database=str(exc.__class__.__name__)), 503
        return jsonify(status="ok", database=db.dialect)

    @app.get("/")
    def index():
        with db.unit_of_work(write=False) as s:
            counts = {name: s.execute(select(func.count()).select_from(model)).scalar()
                      for name, model in (("units", Unit), ("people", Person), ("cases", Case))}
            flows = s.execute(select(FlowVersion).order_by(FlowVersion.flow_id,
                                                           FlowVersion.version)).scalars().all()
        return render_template_string(_INDEX, flows=flows, db=db.engine.url.render_as_string(
            hide_password=True), **counts)

    return app


def engine() -> Engine:
    return current_app.extensions["civflow"]
