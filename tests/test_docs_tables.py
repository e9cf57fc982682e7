"""The docs' tables of stage kinds and checks are what the stage kinds declare (orchestration/docs_tables.py)."""

import difflib

import pytest

from assets.stage_kinds import stage_kinds
from orchestration.docs_tables import COMMAND, END_MARKER, TABLES, checks_table, stage_kinds_table, table_in_doc, write_table


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_docs_table_is_the_generated_one(table):
    in_doc, generated = table_in_doc(table), table.make()
    if in_doc != generated:
        diff = "\n".join(difflib.unified_diff(in_doc.splitlines(), generated.splitlines(), table.doc, "generated", lineterm=""))
        pytest.fail(f"{table.doc}: the {table.name} table is out of date; run `{COMMAND}` and commit it.\n{diff}")


def test_checks_table_has_every_declared_check_with_its_thresholds():
    table = checks_table()
    for kind in stage_kinds().values():
        settings = kind.settings()
        for check in kind.checks:
            row = f"| `{kind.name}` | `{check.name}` | {'yes' if check.blocking else 'no'} | {check.describe(settings)} |"
            assert row in table.splitlines(), row
    # The defaults are the kinds' own: the refined image's 1080 px and the loudness target appear.
    assert "| `refine` | `png_valid` | yes | " in table and "short side >= 1080 px" in table
    assert "-16 LUFS +/- 1 LU" in table


def test_stage_kinds_table_has_one_row_per_kind():
    rows = [line for line in stage_kinds_table().splitlines()[2:]]
    assert [row.split("|")[1].strip() for row in rows] == [f"`{name}`" for name in stage_kinds()]
    refine = next(row for row in rows if row.startswith("| `refine` |"))
    assert "`min_short_side` 1080" in refine and "| yes |" in refine


def test_write_replaces_only_between_the_markers(tmp_path):
    table = TABLES[0]
    doc = tmp_path / table.doc
    doc.parent.mkdir(parents=True)
    doc.write_text(f"before\n\n{table.start_marker}\n\n| stale |\n\n{END_MARKER}\n\nafter | kept\n", encoding="utf-8")
    assert write_table(table, tmp_path)
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("before\n\n") and text.endswith(f"{END_MARKER}\n\nafter | kept\n")
    assert "| stale |" not in text and table_in_doc(table, tmp_path) == table.make()
    assert not write_table(table, tmp_path)  # already current: the file is left alone


def test_a_doc_without_markers_is_a_clear_error(tmp_path):
    table = TABLES[0]
    (tmp_path / "docs").mkdir()
    (tmp_path / table.doc).write_text("no markers here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="operations.md.*where the checks table goes"):
        table_in_doc(table, tmp_path)
