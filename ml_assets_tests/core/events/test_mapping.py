from pathlib import Path

import pytest

from ml_assets.core.events.mapping import EventMapping, MappingError, load_mapping, parse_mapping

REPO = Path(__file__).resolve().parents[3]

MINIMAL = """
[source]
format = "csv"
[columns]
player_id = "user"
event_time = "ts"
event_type = "kind"
"""


def test_cdnow_example_mapping_parses_to_the_documented_shape():
    mapping = load_mapping(REPO / "examples" / "cdnow" / "cdnow.toml")
    assert mapping == EventMapping(
        format="csv",
        separator="whitespace",
        has_header=True,
        columns={"player_id": "customer_id", "event_time": "date", "value": "dollar_value"},
        constants={"event_type": "purchase"},
        time_formats={"event_time": "%Y%m%d"},
    )


def test_defaults():
    mapping = parse_mapping(MINIMAL)
    assert (mapping.separator, mapping.has_header, mapping.constants) == (",", True, {})
    assert mapping.time_format("event_time") == "iso8601"


def test_tab_separator_and_numeric_value_constant():
    text = MINIMAL.replace('format = "csv"', 'format = "csv"\nseparator = "\\t"\nhas_header = false')
    mapping = parse_mapping(text + '\n[constants]\nvalue = 1\nplatform = "ios"\n')
    assert mapping.separator == "\t"
    assert mapping.has_header is False
    assert mapping.constants == {"value": 1.0, "platform": "ios"}


def test_fingerprint_ignores_key_order_and_spelling_but_not_content():
    a = parse_mapping(MINIMAL)
    reordered = parse_mapping(
        "columns = { event_type = 'kind', event_time = 'ts', player_id = 'user' }\n"
        "[source]\nformat = 'csv'\nseparator = ','\n"
    )
    changed = parse_mapping(MINIMAL.replace('"kind"', '"type"'))
    assert a.fingerprint() == reordered.fingerprint()
    assert a.fingerprint() != changed.fingerprint()
    assert a.fingerprint() == parse_mapping(MINIMAL).fingerprint()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[source\nformat = 'csv'", "invalid TOML"),
        (MINIMAL + "[extras]\na = 'b'\n", r"unknown section \[extras\]"),
        (MINIMAL.replace('format = "csv"', 'format = "csv"\nquote = "x"'), r"unknown key \[source\] quote"),
        (MINIMAL + 'user_id = "u"\n', r"\[columns\] user_id: unknown canonical column"),
        (MINIMAL + '[constants]\nsession = "x"\n', r"\[constants\] session: unknown canonical column"),
        (MINIMAL.replace('player_id = "user"\n', ""), r"\[columns\] player_id is required"),
        (MINIMAL.replace('event_time = "ts"\n', ""), r"\[columns\] event_time is required"),
        (MINIMAL.replace('event_type = "kind"\n', ""), "event_type is required"),
        (MINIMAL + '[constants]\nevent_type = "x"\n', r"\[constants\] event_type: .*also mapped"),
        (
            MINIMAL + '[constants]\nplayer_id = "p1"\n',
            r"\[constants\] player_id: .*must come from \[columns\]",
        ),
        (MINIMAL + '[constants]\nvalue = "ten"\n', r"\[constants\] value = 'ten' must be a number"),
        (MINIMAL + "[constants]\ncountry = 3\n", r"\[constants\] country = 3 must be a string"),
        (MINIMAL.replace('"csv"', '"xlsx"'), r"\[source\] format = 'xlsx'"),
        (MINIMAL.replace('format = "csv"', ""), r"\[source\] format is required"),
        (MINIMAL.replace('format = "csv"', 'format = "csv"\nseparator = ";"'), r"\[source\] separator = ';'"),
        (
            MINIMAL.replace('format = "csv"', 'format = "jsonl"\nseparator = ","'),
            r"\[source\] separator applies",
        ),
        (MINIMAL.replace('format = "csv"', 'format = "csv"\nhas_header = "yes"'), r"\[source\] has_header"),
        (MINIMAL + "[time]\nevent_time = 10\n", r"\[time\] event_time = 10 must be a string"),
        (MINIMAL + '[time]\nevent_time = "epoch"\n', r"\[time\] event_time = 'epoch' is not unix_s"),
        (MINIMAL + '[time]\nvalue = "unix_s"\n', r"\[time\] value: not a time column"),
        (MINIMAL + '[time]\nwhen = "unix_s"\n', r"\[time\] when: unknown canonical column"),
        (MINIMAL + '[columns]\nvalue = ""\n', "invalid TOML"),  # a table defined twice
        (MINIMAL.replace('"kind"', '""'), r"\[columns\] event_type = '' must be a non-empty"),
        (MINIMAL.replace('"kind"', "4"), r"\[columns\] event_type = 4"),
        ("source = 1\n" + MINIMAL.split("[columns]")[1], r"'source' must be a \[source\] table"),
    ],
)
def test_invalid_mappings_name_the_key_at_fault(text, message):
    with pytest.raises(MappingError, match=message):
        parse_mapping(text, origin="m.toml")


def test_time_entry_for_an_unmapped_column_is_refused():
    text = MINIMAL.replace('event_time = "ts"\n', "") + '[time]\nevent_time = "unix_s"\n'
    with pytest.raises(MappingError, match=r"\[time\] event_time: the column is not mapped in \[columns\]"):
        parse_mapping(text)


def test_errors_name_the_origin(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[nope]\n")
    with pytest.raises(MappingError, match=r"bad\.toml: unknown section \[nope\]"):
        load_mapping(path)
    with pytest.raises(MappingError, match="cannot read mapping file"):
        load_mapping(tmp_path / "missing.toml")
