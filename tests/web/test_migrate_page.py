"""The owner's migration page (迁移运行中的案件): the link from the version page, the
preview, the confirmation with its CSRF token, the counts that follow. Both databases."""

from __future__ import annotations

from workflows.engine import Actor

from ..test_migrate import FLOW, V1, V2

PAGE = f"/flows/{FLOW}/versions/1/migrate"


def _text(r) -> str:
    return r.get_data(as_text=True)


def _cases(web, engine):
    org = web.org
    engine.publish(V1, "mig-v1.yaml")
    a = engine.start_case(FLOW, org.s1).id
    b = engine.start_case(FLOW, org.s2).id
    engine.fire(b, "submit", Actor.person(org.s2), data={"summary": "小结", "old_note": "旧"})
    engine.publish(V2, "mig-v2.yaml")
    return a, b


def test_preview_then_migrate_from_the_version_page(web, engine):
    a, b = _cases(web, engine)
    web.login("owner")
    version = _text(web.get(f"/flows/{FLOW}/versions/1"))
    assert "迁移运行中的案件" in version and f"{PAGE}?to=2" in version
    form = web.get(f"{PAGE}?to=2")
    assert form.status_code == 200
    page = _text(form)
    assert 'name="map.review"' in page  # the removed step asks for a mapping
    assert "无法迁移" in page and "is not mapped" in page
    preview = web.get(f"{PAGE}?to=2&map.review=check")
    page = _text(preview)
    assert "2 个未办结案件中 2 个将迁移" in page
    assert "old_note" in page  # kept, listed
    assert 'name="map.review" value="check"' in page
    assert engine.get_case(b).flow_version == 1  # a preview changes nothing
    # Without the session's token, nothing happens.
    assert web.post(PAGE, {"to": "2", "map.review": "check"}, csrf=False).status_code == 403
    assert engine.get_case(b).flow_version == 1
    done = web.post(PAGE, {"to": "2", "map.review": "check"})
    assert done.status_code == 302 and done.headers["Location"].endswith(
        f"/flows/{FLOW}/versions/2")
    assert engine.get_case(a).flow_version == engine.get_case(b).flow_version == 2
    assert engine.get_case(b).state == "check"
    v2 = _text(web.get(f"/flows/{FLOW}/versions/2"))
    assert "2 个案件已迁移到版本 2" in v2
    # The case page's timeline says what happened, with the versions in the comment.
    case = _text(web.get(f"/cases/{b}"))
    assert "迁移到流程的新版本" in case and "v1 → v2" in case
    runs = _text(web.get(f"{PAGE}?to=2"))
    assert "本流程的迁移记录" in runs and "v1 → v2" in runs


def test_bad_input_is_shown_and_changes_nothing(web, engine):
    _a, b = _cases(web, engine)
    web.login("admin")
    r = web.get(f"{PAGE}?to=2&map.review=nowhere")
    # The refusals are keyed: the page says them in the session's language (中文 by default).
    assert r.status_code == 422 and "“nowhere”不是第 2 版的状态" in _text(r)
    r = web.get(f"{PAGE}?to=7")
    assert r.status_code == 404 and "流程 mig-flow 没有第 7 版" in _text(r)
    r = web.post(PAGE, {"to": "2", "map.review": "nowhere"})
    assert r.status_code == 422
    assert engine.get_case(b).flow_version == 1


def test_staff_get_the_403_page(web, engine):
    _cases(web, engine)
    web.login("l1")
    assert web.get(f"{PAGE}?to=2").status_code == 403
    assert web.post(PAGE, {"to": "2", "map.review": "check"}).status_code == 403
