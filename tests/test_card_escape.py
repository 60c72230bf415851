"""Issue 23 #4: no string from outside (a source card's licence, MEDI task names, local file and source names) can
add markup to a published card; issue 22 #9: the card names the library versions that wrote the shards."""

import re
from importlib.metadata import version

from hypothesis import given, settings, strategies as st
from markdown_it import MarkdownIt

from pipeline.common.accounting import RowAccount
from pipeline.common.markdown import code, escape, markdown_table
from pipeline.config import DecontaminationConfig
from pipeline.road.build import DROP_REASONS, assemble, write_build
from pipeline.road.card import licenses_md, render_card
from pipeline.road.grouped import TaskRows
from pipeline.schema import SCHEMA
from tests.test_build import _frames

PAYLOAD = "mit | [verify](https://evil.example) <img src=x>\n# Heading"
_MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _card(payload: str = PAYLOAD, writers=None) -> str:
    source = {"source": f"evil{payload}", "repo": f"files/{payload}.csv", "revision": f"main{payload}",
              "commit": payload, "moving_ref": True, "license": payload, "license_from": payload,
              "rows_in": 3, "rows_out": 3}
    return render_card(repo_id="org/ds", schema=SCHEMA, num_rows=3, num_bytes=10, download_size=10, sources=[source],
                       exclusions={f"Task{payload}": payload}, guide={"name": f"m{payload}", "revision": payload},
                       mining={"margin": payload}, seed=1,
                       tasks=[TaskRows(task_type="medi", task_name=f"nq{payload}", rows=3)],
                       accounts=[RowAccount(source=f"MEDI{payload}", rows_in=3, rows_out=3, drops={})],
                       drop_reasons=DROP_REASONS, decontamination=DecontaminationConfig(), reference=None,
                       writers=writers)


def _body(card: str) -> str:
    return card.split("\n---\n", 1)[1]


def _inert(markdown: str) -> None:
    """The rendered markdown holds no link, image, HTML, heading or table cell that the payload made."""
    tokens = _MD.parse(markdown)
    flat = [t for tok in tokens for t in [tok, *(tok.children or [])]]
    assert not [t.type for t in flat if t.type in ("link_open", "image", "html_inline", "html_block")]
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert not [h for h in headings if "Heading" in h or "evil" in h], headings
    html = _MD.render(markdown)
    assert "<img" not in html and "<a " not in html and "<h1>Heading" not in html
    assert not re.search(r"^#+ *Heading", markdown, re.MULTILINE), "the payload's newline started a heading"
    assert "https://" not in markdown and "<img" not in markdown, "nothing a GFM renderer would autolink or show"
    for cells in _rows(tokens):
        assert len(set(cells)) == 1, cells


def _rows(tokens) -> list[list[int]]:
    """Per table, the number of cells of each row (header first)."""
    tables, cells = [], 0
    for t in tokens:
        if t.type == "table_open":
            tables.append([])
        elif t.type == "tr_open":
            cells = 0
        elif t.type in ("th_open", "td_open"):
            cells += 1
        elif t.type == "tr_close":
            tables[-1].append(cells)
    return tables


def test_a_hostile_licence_string_adds_no_link_image_heading_or_cell_to_the_card():
    card = _card()
    _inert(_body(card))
    _inert(licenses_md([{"source": "evil", "repo": PAYLOAD, "revision": "", "commit": "", "moving_ref": False,
                         "license": PAYLOAD, "license_from": PAYLOAD, "rows_in": 1, "rows_out": 1}]))
    html = _MD.render(_body(card))
    # still shown, as text: a reader sees what the source's card claims
    assert "<td>mit | [verify](https://evil.example) &lt;img src=x&gt; # Heading</td>" in html
    sources = [line for line in _body(card).splitlines() if line.startswith("| evil")]
    assert len(sources) == 1 and sources[0].count("|") == 9, "eight cells, the payload's pipes escaped"


def test_the_cards_own_markup_is_kept():
    card = _card(payload="", writers={"pyarrow": "1"})
    assert "| evil | files/.csv | `main` (a moving ref) |" in card
    assert "Guide model: `m` at revision " in card
    assert code("a|b") == "a&#124;b" and code("0fd18e25b25c") == "`0fd18e25b25c`"
    assert escape("x\\|y") == "x\\\\&#124;y", "a backslash cannot escape the cell's own pipe"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.text(), min_size=3, max_size=3), max_size=5))
def test_any_text_stays_in_its_cell(rows):
    table = markdown_table(["a", "b", "c"], rows)
    lines = table.split("\n")
    assert len(lines) == len(rows) + 2, "no cell adds or joins a line"
    for line in lines[2:]:
        assert line.count("|") == 4 and "<" not in line and "\r" not in line
    for row in rows:
        for cell in row:
            out = escape(cell)
            assert not set(out) & set("\n\r<>|[]`") and "//" not in out
    tokens = _MD.parse(table)
    assert _rows(tokens) == [[3] * (len(rows) + 1)], "one table, every row with the header's three cells"
    flat = [c for t in tokens for c in (t.children or [])]
    assert not [c.type for c in flat if c.type in ("link_open", "image", "html_inline", "code_inline")]


def test_the_card_records_the_writer_versions_and_they_change_the_content_hash(tmp_path):
    card = _card(payload="")
    for name in ("pyarrow", "polars", "datasets"):
        assert f"| {name} | {version(name)} |" in card
    table = assemble(_frames(), seed=1)
    hashes = {v: write_build(table, lambda size, v=v: _card("", writers={"pyarrow": v, "polars": "1"}),
                             tmp_path / v, 1 << 20) for v in ("21.0.0", "22.0.0")}
    assert hashes["21.0.0"] != hashes["22.0.0"], "other writers, another version: the tag says so"
