"""docs/statuses.md is pinned to the provider registry: same rows, same version, same
per-carrier facts; and matching ignores case and surrounding whitespace, as it says."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from smsrx.providers import MAPPING_VERSION, PROVIDERS, Provider
from smsrx.providers.base import normalise
from smsrx.statuses import FINAL_STATUSES, Status

DOC = Path(__file__).resolve().parents[1] / "docs" / "statuses.md"

MAPPING_HEADER = (
    "provider",
    "carrier value",
    "canonical status",
    "final",
    "documented by the carrier",
)
KNOWS_HEADER = ("provider", "carrier", "how", "field mapped", "what it can and cannot know")

FINGERPRINTS = {1: "9089326bd243b049"}
"""MAPPING_VERSION -> fingerprint of its (provider, value, status) rows. A row that
changes meaning changes the fingerprint: bump MAPPING_VERSION and record the new one."""

Row = tuple[str, str, str, str, str]


def _cell(text: str) -> str:
    """A cell's text, without the backticks around a code span."""
    match = re.fullmatch(r"`([^`]*)`", text)
    return match.group(1) if match else text


def tables(text: str) -> dict[tuple[str, ...], list[tuple[str, ...]]]:
    """Every Markdown table of ``text``: header -> body rows, cells unquoted."""
    found: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not (line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---")):
            continue
        header = tuple(c.strip() for c in line.strip("|").split("|"))
        body = []
        for row in lines[i + 2 :]:
            if not row.startswith("|"):
                break
            body.append(tuple(_cell(c.strip()) for c in row.strip().strip("|").split("|")))
        found[header] = body
    return found


def doc_rows() -> list[Row]:
    """The mapping table of docs/statuses.md, as written."""
    return [tuple(r) for r in tables(DOC.read_text())[MAPPING_HEADER]]  # type: ignore[misc]


def code_rows() -> list[Row]:
    """The registry's rows, in the doc's form."""
    rows = []
    for name, provider in PROVIDERS.items():
        mapping = provider.statuses
        for value, status in mapping.rows.items():
            final = "yes" if status in FINAL_STATUSES else "no"
            documented = "yes" if value in mapping.documented else "mapped ahead"
            rows.append((name, value, status.value, final, documented))
    return rows


def how(provider: Provider) -> str:
    """How smsrx learns the provider's statuses, as the doc's `how` column says it."""
    ways = (["push receipts"] if "receipts" in provider.push else []) + (
        ["poll"] if provider.polls else []
    )
    return " + ".join(ways) or "none"


def fingerprint() -> str:
    """A short hash of the rows' meaning (documented flags left out)."""
    rows = sorted(
        (name, normalise(value), status.value)
        for name, provider in PROVIDERS.items()
        for value, status in provider.statuses.rows.items()
    )
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


DOC_ROWS = doc_rows()
_MAPPED = {(row[0], normalise(row[1])) for row in DOC_ROWS}


def test_title_carries_the_mapping_version() -> None:
    """The title's version is MAPPING_VERSION."""
    title = DOC.read_text().splitlines()[0]
    assert title == f"# Status mapping, version {MAPPING_VERSION}"


def test_doc_rows_are_exactly_the_registry_rows() -> None:
    """Every registry row is in the doc and every doc row is in the registry, with its status, finality and documented flag."""
    doc, code = set(DOC_ROWS), set(code_rows())
    assert len(doc) == len(DOC_ROWS), "a row is written twice in docs/statuses.md"
    assert {"missing from docs/statuses.md": code - doc, "not in the code": doc - code} == {
        "missing from docs/statuses.md": set(),
        "not in the code": set(),
    }


def test_rows_changed_only_with_a_version_bump() -> None:
    """The rows' meaning matches the fingerprint recorded for MAPPING_VERSION."""
    recorded = FINGERPRINTS.get(MAPPING_VERSION)
    if recorded is None:
        raise AssertionError(f"record FINGERPRINTS[{MAPPING_VERSION}] = {fingerprint()!r}")
    assert recorded == fingerprint(), (
        f"the status rows changed but MAPPING_VERSION is still {MAPPING_VERSION}: bump it "
        f"and record FINGERPRINTS[{MAPPING_VERSION + 1}] = {fingerprint()!r}"
    )


def test_precedence_line_is_the_code_order() -> None:
    """The precedence written in the doc is the order of smsrx.statuses.Status."""
    assert f"`{' < '.join(Status)}`" in DOC.read_text()


def test_what_smsrx_can_know_table_is_the_registry() -> None:
    """Each provider's carrier, way of learning statuses, field mapped and `knows` text are the registry's."""
    written = set(tables(DOC.read_text())[KNOWS_HEADER])
    expected = {
        (
            name,
            p.title,
            how(p),
            p.status_key if p.statuses.rows else "—",
            p.knows,
        )
        for name, p in PROVIDERS.items()
    }
    assert written == expected


@st.composite
def variants(draw: st.DrawFn) -> tuple[Row, str]:
    """A doc row, and its carrier value with random case per character and surrounding whitespace."""
    row = draw(st.sampled_from(DOC_ROWS))
    cased = "".join(draw(st.sampled_from([c.upper(), c.lower()])) for c in row[1])
    space = st.text(alphabet=" \t\n\r\u00a0\u2003", max_size=3)
    return row, draw(space) + cased + draw(space)


@given(variants())
def test_case_and_whitespace_variants_map_as_the_doc_says(case: tuple[Row, str]) -> None:
    """Any case or surrounding-whitespace variant of a mapped value maps to the doc's status and finality."""
    (provider, _, status, final, _), variant = case
    mapped = PROVIDERS[provider].statuses.map(variant)
    assert (mapped.status.value, mapped.is_final, mapped.known) == (status, final == "yes", True)


@given(st.sampled_from(list(PROVIDERS)), st.text(max_size=30))
def test_values_in_no_table_map_to_unknown(provider: str, text: str) -> None:
    """Text that no table maps is `unknown`, not final, with known=False."""
    if any(normalise(text) == value for _, value in _MAPPED):
        return
    mapped = PROVIDERS[provider].statuses.map(text)
    assert (mapped.status, mapped.is_final, mapped.known) == (Status.UNKNOWN, False, False)
