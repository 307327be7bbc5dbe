from __future__ import annotations

import pytest

from search_app.query_parsing import QueryError, parse_query_text, query_from_params


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("red painting but no blue", ("red painting", ("blue",))),
        ("angel -blue", ("angel", ("blue",))),
        ('angel -"gold leaf" -blue', ("angel", ("gold leaf", "blue"))),
        ("a saint without a halo, with a book", ("a saint, with a book", ("halo",))),
        ("Madonna and Child except the angels", ("Madonna and Child", ("angels",))),
        ("Saint Jerome with a lion", ("Saint Jerome with a lion", ())),
        ("no-nonsense portrait", ("no-nonsense portrait", ())),
        ("self-portrait", ("self-portrait", ())),
        ("A Lady Reading - Art Institute of Chicago", ("A Lady Reading Art Institute of Chicago", ())),
        ("angel -- gold -blue", ("angel gold", ("blue",))),
        ("  ", ("", ())),
    ],
)
def test_parse_query_text(raw: str, expected: tuple[str, tuple[str, ...]]) -> None:
    assert parse_query_text(raw) == expected


def test_query_from_params_reads_filters_and_levels() -> None:
    query = query_from_params(
        {"q": "halo -blue", "level": "entity", "year_from": "1400", "artist": " Duccio "}
    )
    assert (query.text, query.exclude, query.level) == ("halo", ("blue",), "entity")
    assert query.filters.year_from == 1400 and query.filters.artist == "Duccio"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"q": "x", "level": "galaxy"}, "level"),
        ({"q": "x", "year_from": "soon"}, "year_from"),
        ({"q": "x", "year_from": "1500", "year_to": "1400"}, "after"),
        ({"q": ""}, "type something"),
        ({"q": "x", "limit": "1000"}, "limit"),
    ],
)
def test_query_from_params_rejects_bad_input_clearly(params: dict[str, str], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        query_from_params(params)
