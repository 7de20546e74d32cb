"""The docs show what ships: the complete example in docs/definitions.md is the shipped file."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_complete_example_is_the_shipped_regular_assessment():
    doc = (ROOT / "docs" / "definitions.md").read_text(encoding="utf-8")
    shipped = (ROOT / "definitions" / "regular-assessment.yaml").read_text(encoding="utf-8")
    head = "`definitions/regular-assessment.yaml`, verbatim:"
    start = doc.index("```yaml\n", doc.index(head)) + len("```yaml\n")
    assert doc[start:doc.index("```", start)] == shipped, (
        "docs/definitions.md's complete example differs from definitions/regular-assessment.yaml;"
        " copy the file into the example")


def test_the_docs_stand_alone():
    """No page of the repository sends its reader outside it."""
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = path.read_text(encoding="utf-8")
        assert "../shared" not in text and "DOMAIN.md" not in text \
            and "DESIGN.md" not in text, path.name
