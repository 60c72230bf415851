"""`pipeline.versions`: what `gistforge show` and `diff` read of a version, from its facts file or its card."""

import json
import shutil

from pipeline.road.facts import FACTS
from pipeline.versions import LocalVersions, show
from tests.test_configs import version  # noqa: F401 - the module's published two-task version


def test_show_reads_the_facts_file_and_a_version_without_one_shows_the_same_from_its_card(version, tmp_path):  # noqa: F811
    hub = version.path.parents[2]  # <hub>/datasets--org--ds/snapshots/<rev>
    facts = json.loads((version.path / FACTS).read_text())
    assert {s["source"] for s in facts["sources"]} == {"Moods", "Topics"} and facts["mining"]["seed"] == 42
    assert str(tmp_path.parent) not in (version.path / FACTS).read_text(), "no machine path in a published file"
    from_facts = show(LocalVersions(hub, "org/ds"), version.tag)

    older = tmp_path / "hub"  # the same version as one published before facts.json existed
    shutil.copytree(hub, older, symlinks=True)
    (older / version.path.relative_to(hub) / FACTS).unlink()
    from_card = show(LocalVersions(older, "org/ds"), version.tag)

    for part in ("sources", "drops", "guide", "mining"):
        assert getattr(from_facts, part) == getattr(from_card, part), part
    assert from_facts.mining["negatives_per_query"] == "2" and from_facts.guide["name"] == "bundled:all-MiniLM-L6-v2"
    assert from_facts.drops and all(d["dropped"] != "0" for d in from_facts.drops)


def test_a_moving_ref_reads_the_same_from_the_facts_and_from_an_older_versions_card():
    from pipeline.road.card import sources_table
    from pipeline.road.facts import SourceRows, VersionFacts
    from pipeline.versions import _made_from, card_sections

    rows = [SourceRows(source="MEDI", repo="avsolatorio/medi-data", revision="main", commit="a" * 40, moving_ref=True,
                       license="mit", license_from="the source's dataset card", rows_in=3, rows_out=2),
            SourceRows(source="T", repo="t|x.csv", revision="", commit="", moving_ref=False, license="cc-by-4.0",
                       license_from="the build config", rows_in=1, rows_out=1)]
    card = "# card\n\n## Sources and licences\n" + sources_table([r.model_dump() for r in rows]) + "\n"
    from_card = card_sections(card)["Sources and licences"]
    facts = VersionFacts(sources=rows, accounts=[], guide={}, mining={})
    assert from_card == _made_from(facts)["sources"]
    assert from_card[0]["revision"] == "main (a moving ref)" and from_card[1]["repo / file"] == "t|x.csv"
