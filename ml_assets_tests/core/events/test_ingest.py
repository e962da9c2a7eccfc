import json
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from ml_assets.core.events.ingest import IngestError, ingest, read_events
from ml_assets.core.events.landing import LANDING_SCHEMA, list_batches, read_window, scan_landing
from ml_assets.core.events.mapping import MappingError, parse_mapping

REPO = Path(__file__).resolve().parents[3]
CDNOW = REPO / "examples" / "cdnow"


def mapping(fmt="csv", time="unix_s", extra_source="", extra_columns="", constants='event_type = "open"'):
    return parse_mapping(
        f'[source]\nformat = "{fmt}"\n{extra_source}\n'
        f'[columns]\nplayer_id = "user"\nevent_time = "ts"\nvalue = "amount"\n{extra_columns}\n'
        f"[constants]\n{constants}\n"
        f'[time]\nevent_time = "{time}"\n'
    )


def utc(*parts):
    return datetime(*parts, tzinfo=UTC)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_comma_unix_seconds(tmp_path):
    path = write(tmp_path, "e.csv", "user,ts,amount\n007,1700000000,1.5\n008,1700000000.25,\n")
    events = read_events(path, mapping())
    assert list(events.schema.items()) == [
        (c, t) for c, t in LANDING_SCHEMA.items() if c not in ("batch_id", "source")
    ]
    assert events["player_id"].to_list() == ["007", "008"]
    assert events["event_time"].to_list() == [
        utc(2023, 11, 14, 22, 13, 20),
        utc(2023, 11, 14, 22, 13, 20, 250000),
    ]
    assert events["event_time_raw"].to_list() == ["1700000000", "1700000000.25"]
    assert events["value"].to_list() == [1.5, None]
    assert events["event_type"].to_list() == ["open", "open"]
    assert events["received_date"].to_list() == [date(2023, 11, 14)] * 2
    assert events["platform"].to_list() == [None, None]


def test_tsv_unix_milliseconds(tmp_path):
    path = write(tmp_path, "e.tsv", "user\tts\tamount\nA\t1700000000123\t2\nB\t1700006400000\t-3.25\n")
    events = read_events(path, mapping(time="unix_ms", extra_source='separator = "\\t"'))
    assert events["player_id"].to_list() == ["A", "B"]
    assert events["event_time"].to_list() == [utc(2023, 11, 14, 22, 13, 20, 123000), utc(2023, 11, 15)]
    assert events["value"].to_list() == [2.0, -3.25]


def test_whitespace_strftime_with_crlf_and_leading_spaces(tmp_path):
    path = tmp_path / "e.txt"
    path.write_bytes(b" user   ts  amount\r\n 00002 19970112  77.00\r\n\r\n 00010 19980630   0.00\r\n")
    events = read_events(path, mapping(time="%Y%m%d", extra_source='separator = "whitespace"'))
    assert events["player_id"].to_list() == ["00002", "00010"]
    assert events["event_time"].to_list() == [utc(1997, 1, 12), utc(1998, 6, 30)]
    assert events["value"].to_list() == [77.0, 0.0]
    # Line numbers count the header and the blank line, as an editor does.
    assert events["event_id"].n_unique() == 2 and all(e.endswith("-0") for e in events["event_id"])


@pytest.mark.parametrize(
    ("time_format", "raw", "expected"),
    [
        ("unix_s", "1700006400", utc(2023, 11, 15)),
        ("unix_s", "1700000000.5", utc(2023, 11, 14, 22, 13, 20, 500000)),
        ("unix_ms", "1700000000123.0", utc(2023, 11, 14, 22, 13, 20, 123000)),
        ("iso8601", "2024-03-01T10:20:30Z", utc(2024, 3, 1, 10, 20, 30)),
        ("iso8601", "2024-03-01T10:20:30.250z", utc(2024, 3, 1, 10, 20, 30, 250000)),
        ("iso8601", "2024-03-01T10:20:30+02:00", utc(2024, 3, 1, 8, 20, 30)),
        ("iso8601", "2024-03-01T01:20:30-0500", utc(2024, 3, 1, 6, 20, 30)),
        ("iso8601", "2024-03-01 10:20:30.123456", utc(2024, 3, 1, 10, 20, 30, 123456)),
        ("iso8601", "2024-03-01T10:20", utc(2024, 3, 1, 10, 20)),
        ("iso8601", "2024-03-01", utc(2024, 3, 1)),
        ("%Y%m%d", "19970101", utc(1997, 1, 1)),
        ("%d/%m/%Y %H:%M", "31/12/2020 23:59", utc(2020, 12, 31, 23, 59)),
        ("%Y-%m-%d %H:%M:%S%z", "2020-12-31 23:59:00+0100", utc(2020, 12, 31, 22, 59)),
    ],
)
def test_time_formats(tmp_path, time_format, raw, expected):
    path = write(tmp_path, "e.jsonl", json.dumps({"user": "u", "ts": raw, "amount": 1}) + "\n")
    events = read_events(path, mapping(fmt="jsonl", time=time_format))
    assert events["event_time"].to_list() == [expected]
    assert events["event_time_raw"].to_list() == [raw]


def test_parquet_iso8601_offsets_and_native_types(tmp_path):
    path = tmp_path / "e.parquet"
    pl.DataFrame(
        {
            "user": ["00042", "x9"],
            "ts": ["2024-05-01T12:00:00+05:30", "2024-05-02T00:00:00Z"],
            "amount": [10, None],
            "id": ["a", "b"],
        }
    ).write_parquet(path)
    events = read_events(path, mapping(fmt="parquet", time="iso8601", extra_columns='event_id = "id"'))
    assert events["event_id"].to_list() == ["a", "b"]
    assert events["player_id"].to_list() == ["00042", "x9"]
    assert events["event_time"].to_list() == [utc(2024, 5, 1, 6, 30), utc(2024, 5, 2)]
    assert events["value"].to_list() == [10.0, None]


def test_parquet_native_datetime_column(tmp_path):
    path = tmp_path / "e.parquet"
    frame = pl.DataFrame({"user": ["u"], "ts": [datetime(2024, 1, 1, 9)], "amount": [1.25]})
    frame.with_columns(
        pl.col("ts").dt.cast_time_unit("ns").dt.replace_time_zone("Europe/Paris")
    ).write_parquet(path)
    events = read_events(path, mapping(fmt="parquet", time="iso8601"))
    assert events["event_time"].to_list() == [utc(2024, 1, 1, 8)]
    assert events["value"].to_list() == [1.25]


def test_jsonl_numbers_nested_properties_and_blank_lines(tmp_path):
    lines = [
        {"user": 17, "ts": 1700000000, "amount": "3.5", "props": {"level": 3, "name": 'a"b'}},
        {"user": "017", "ts": "2023-11-14T22:13:20Z", "amount": 4, "props": None},
    ]
    path = write(tmp_path, "e.jsonl", json.dumps(lines[0]) + "\n\n" + json.dumps(lines[1]) + "\n")
    events = read_events(path, mapping(fmt="jsonl", time="unix_s", extra_columns='properties = "props"'))
    assert events["player_id"].to_list() == ["17", "017"]
    assert events["event_time"].to_list() == [utc(2023, 11, 14, 22, 13, 20), None]
    assert events["value"].to_list() == [3.5, 4.0]
    assert json.loads(events["properties"][0]) == {"level": 3, "name": 'a"b'}
    assert events["properties"][1] is None
    assert events["event_id"].n_unique() == 2 and all(e.endswith("-0") for e in events["event_id"])


def test_quoted_csv_fields(tmp_path):
    path = write(
        tmp_path,
        "e.csv",
        'user,ts,amount,country\n"Doe, J.",1700006400,"1.5","say ""hi"""\nk,1700006401,2,\n',
    )
    events = read_events(path, mapping(extra_columns='country = "country"'))
    assert events["player_id"].to_list() == ["Doe, J.", "k"]
    assert events["country"].to_list() == ['say "hi"', None]
    assert events["value"].to_list() == [1.5, 2.0]


def test_csv_without_header_uses_column_numbers(tmp_path):
    path = write(tmp_path, "e.csv", "p1,1700006460,1\np2,1700006520,2\n")
    m = parse_mapping(
        '[source]\nformat = "csv"\nhas_header = false\n'
        '[columns]\nplayer_id = "column_1"\nevent_time = "column_2"\nevent_type = "column_3"\n'
        '[time]\nevent_time = "unix_s"\n'
    )
    events = read_events(path, m)
    assert events["player_id"].to_list() == ["p1", "p2"]
    assert events["event_type"].to_list() == ["1", "2"]
    assert events["event_time"].to_list() == [utc(2023, 11, 15, 0, 1), utc(2023, 11, 15, 0, 2)]


def test_missing_source_column_is_named_with_the_files_columns(tmp_path):
    path = write(tmp_path, "e.csv", "user,when,amount\nu,1,2\n")
    with pytest.raises(IngestError, match=r"e\.csv: column 'ts' \(mapped to event_time\).*'user', 'when'"):
        read_events(path, mapping())
    parquet = tmp_path / "e.parquet"
    pl.DataFrame({"user": ["u"], "amount": [1]}).write_parquet(parquet)
    with pytest.raises(IngestError, match=r"column 'ts'.*'user', 'amount'"):
        read_events(parquet, mapping(fmt="parquet"))


def test_ragged_csv_names_the_line(tmp_path):
    path = write(tmp_path, "e.csv", "user,ts,amount\nu,1,2\n\nu,1\n")
    with pytest.raises(IngestError, match=r"e\.csv: line 4: expected 3 fields, found 2"):
        read_events(path, mapping())
    path = write(tmp_path, "w.txt", "user ts amount\nu 1 2 3\n")
    with pytest.raises(IngestError, match=r"line 2: expected 3 fields, found 4"):
        read_events(path, mapping(extra_source='separator = "whitespace"'))
    path = write(tmp_path, "q.csv", 'user,ts,amount\nu,1,2\n"u,1,2\n')
    with pytest.raises(IngestError, match=r"line 3: a quoted field is not closed"):
        read_events(path, mapping())


def test_bad_json_line_is_named(tmp_path):
    path = write(tmp_path, "e.jsonl", '{"user": "u", "ts": 1, "amount": 1}\n\n{"user": "v", "ts": \n')
    with pytest.raises(IngestError, match=r"e\.jsonl: line 3: invalid JSON"):
        read_events(path, mapping(fmt="jsonl"))
    path = write(tmp_path, "a.jsonl", '{"user": "u", "ts": 1, "amount": 1}\n[1, 2]\n')
    with pytest.raises(IngestError, match=r"a\.jsonl: line 2: not a JSON object"):
        read_events(path, mapping(fmt="jsonl"))


def test_unreadable_parquet_and_empty_files(tmp_path):
    path = write(tmp_path, "e.parquet", "this is not parquet")
    with pytest.raises(IngestError, match=r"e\.parquet: not a readable Parquet file"):
        read_events(path, mapping(fmt="parquet"))
    for fmt, text in [("csv", ""), ("jsonl", "\n\n"), ("csv", "user,ts,amount\n")]:
        path = write(tmp_path, f"empty.{fmt}", text)
        with pytest.raises(IngestError, match=r"empty\.\w+: (file is empty|no data rows)"):
            read_events(path, mapping(fmt=fmt))
    empty_parquet = tmp_path / "none.parquet"
    pl.DataFrame(schema={"user": pl.String, "ts": pl.String, "amount": pl.String}).write_parquet(
        empty_parquet
    )
    with pytest.raises(IngestError, match="no data rows"):
        read_events(empty_parquet, mapping(fmt="parquet"))


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "e.csv"
    path.write_bytes(b"user,ts,amount\nu,1,2\n\xff\xfe,1,2\n")
    with pytest.raises(IngestError, match=r"line 3: not valid UTF-8"):
        read_events(path, mapping())


def test_unparsed_time_and_value_keep_the_row(tmp_path):
    path = write(
        tmp_path, "e.csv", "user,ts,amount\na,1700000000,1\nb,yesterday,n/a\nc,1700006400,nan\nd,,2\n"
    )
    events = read_events(path, mapping())
    assert events["player_id"].to_list() == ["a", "b", "c", "d"]
    assert events["event_time"].to_list() == [utc(2023, 11, 14, 22, 13, 20), None, utc(2023, 11, 15), None]
    assert events["event_time_raw"].to_list() == ["1700000000", "yesterday", "1700006400", ""]
    assert events["value"].to_list() == [1.0, None, None, 2.0]
    assert events["value_raw"].to_list() == [None, "n/a", "nan", None]  # the text, for quarantine
    # Rows without a time are delivered on the file's latest event day.
    assert events["received_date"].to_list() == [
        date(2023, 11, 14),
        date(2023, 11, 15),
        date(2023, 11, 15),
        date(2023, 11, 15),
    ]
    report = ingest(path, write(tmp_path, "m.toml", MAPPING_TOML), tmp_path / "landing")
    assert (report.rows, report.unparsed_times, report.unparsed_values) == (4, 2, 2)
    assert (report.first_day, report.last_day) == (date(2023, 11, 14), date(2023, 11, 15))


def test_no_parsable_time_at_all_is_an_error(tmp_path):
    path = write(tmp_path, "e.csv", "user,ts,amount\na,soon,1\n")
    with pytest.raises(IngestError, match=r"no 'ts' value parsed as 'unix_s' \(first value: 'soon'\)"):
        read_events(path, mapping())


def test_derived_event_ids_depend_on_the_rows_not_on_how_the_file_is_written(tmp_path):
    text = "user,ts,amount\nu,1700000001,2\nu,1700000001,2\nw,1700000005,1\n"
    first = read_events(write(tmp_path, "a.csv", text), mapping())
    ids = first["event_id"].to_list()
    assert len(set(ids)) == 3  # identical lines stay distinct events (a repeat purchase)
    assert ids[0].endswith("-0") and ids[1].endswith("-1") and ids[0][:-2] == ids[1][:-2]
    # a re-export: CRLF endings, a byte-order mark, quoted fields, a row appended
    crlf = (
        "\ufeff"
        + 'user,ts,amount\r\n"u",1700000001,2\r\nu,"1700000001",2\r\nw,1700000005,1\r\nv,1700000001,2\r\n'
    )
    again = read_events(write(tmp_path, "b.csv", crlf), mapping())
    assert again["event_id"].to_list()[:3] == ids
    assert again["event_id"][3] not in ids
    # the same file ingested again: the same ids
    assert read_events(write(tmp_path, "c.csv", text), mapping())["event_id"].to_list() == ids


MAPPING_TOML = """
[source]
format = "csv"
[columns]
player_id = "user"
event_time = "ts"
value = "amount"
[constants]
event_type = "open"
[time]
event_time = "unix_s"
"""


def test_ingest_twice_lands_once(tmp_path):
    path = write(tmp_path, "e.csv", "user,ts,amount\nu,1700006400,2\nv,1700092800,3\n")
    mapping_path = write(tmp_path, "m.toml", MAPPING_TOML)
    landing = tmp_path / "landing"
    first = ingest(path, mapping_path, landing)
    second = ingest(path, mapping_path, landing)
    assert first.landed and not second.landed
    assert first.batch_id == second.batch_id
    assert (first.rows, first.first_day, first.last_day) == (2, date(2023, 11, 15), date(2023, 11, 16))
    assert [p.name for p in list_batches(landing)] == [f"{first.batch_id}.parquet"]
    rows = scan_landing(landing).collect()
    assert rows["source"].to_list() == ["e.csv", "e.csv"]
    assert rows["value"].to_list() == [2.0, 3.0]
    # Another mapping of the same file is another batch.
    other = ingest(path, write(tmp_path, "m2.toml", MAPPING_TOML.replace('"open"', '"close"')), landing)
    assert other.landed and other.batch_id != first.batch_id
    assert len(list_batches(landing)) == 2


def test_a_bad_file_lands_nothing(tmp_path):
    path = write(tmp_path, "e.csv", "user,ts,amount\nu,1700006400,2\nv,1700092800\n")
    landing = tmp_path / "landing"
    with pytest.raises(IngestError, match="line 3"):
        ingest(path, write(tmp_path, "m.toml", MAPPING_TOML), landing)
    assert list_batches(landing) == [] and read_window(landing) is None


def test_cdnow(tmp_path):
    source = CDNOW / "CDNOW_master.txt"
    landing = tmp_path / "landing"
    report = ingest(source, CDNOW / "cdnow.toml", landing)
    assert report.landed
    assert (report.rows, report.unparsed_times, report.unparsed_values) == (69_659, 0, 0)
    window = read_window(landing)
    assert window is not None
    assert (window.first_day, window.last_day) == (date(1997, 1, 1), date(1998, 6, 30))

    rows = scan_landing(landing).collect()
    assert rows.height == 69_659
    assert rows["event_id"].n_unique() == 69_659
    assert rows["player_id"].n_unique() == 23_570
    assert rows["player_id"].head(3).to_list() == ["00001", "00002", "00002"]
    assert set(rows["event_type"].unique()) == {"purchase"}

    lines = [line for line in source.read_text().splitlines()[1:] if line.strip()]
    repeated = {line for line, n in Counter(lines).items() if n > 1}
    assert len(repeated) == 215
    assert (rows["value"] == 0).sum() == 80
    dollars = sum(Decimal(line.split()[3]) for line in lines)
    assert rows["value"].sum() == pytest.approx(float(dollars), abs=1e-6)
    # Every copy of a repeated line landed as its own event.
    repeated_rows = sum(n for n in Counter(lines).values() if n > 1)
    keyed = rows.with_columns(
        line=pl.concat_str(pl.col("player_id"), pl.col("event_time_raw"), pl.col("value"), separator="|")
    )
    dup_keys = keyed.filter(pl.col("line").is_duplicated())
    assert dup_keys.height >= repeated_rows
    assert dup_keys["event_id"].n_unique() == dup_keys.height


def test_iso8601_layouts_mixed_in_one_file(tmp_path):
    raws = ["2024-03-01", "2024-03-01T10:20:30Z", "bad", "2024-03-01 10:20", "2024-03-01T10:20:30+01:00", ""]
    text = "user,ts,amount\n" + "".join(f"u,{raw},1\n" for raw in raws)
    events = read_events(write(tmp_path, "e.csv", text), mapping(time="iso8601"))
    assert events["event_time"].to_list() == [
        utc(2024, 3, 1),
        utc(2024, 3, 1, 10, 20, 30),
        None,
        utc(2024, 3, 1, 10, 20),
        utc(2024, 3, 1, 9, 20, 30),
        None,
    ]
    assert events["event_time_raw"].to_list() == raws


def test_the_mapping_renames_event_types_and_only_then_changes_batch_ids(tmp_path):
    text = "user,ts,amount,kind\n1,1700000000,1,Purchase\n2,1700000000,2,purchase\n3,1700000000,,level-up\n"
    path = write(tmp_path, "e.csv", text)
    plain = parse_mapping(
        '[source]\nformat = "csv"\n[columns]\nplayer_id = "user"\nevent_time = "ts"\nvalue = "amount"\n'
        'event_type = "kind"\n[time]\nevent_time = "unix_s"\n'
    )
    renamed = parse_mapping(
        '[source]\nformat = "csv"\n[columns]\nplayer_id = "user"\nevent_time = "ts"\nvalue = "amount"\n'
        'event_type = "kind"\n[time]\nevent_time = "unix_s"\n'
        '[event_types]\n"Purchase" = "purchase"\n"level-up" = "level_up"\n'
    )
    assert read_events(path, plain)["event_type"].to_list() == ["Purchase", "purchase", "level-up"]
    assert read_events(path, renamed)["event_type"].to_list() == ["purchase", "purchase", "level_up"]
    # a mapping without renames keeps the fingerprint (and so the batch ids) it always had
    assert "event_types" not in plain.fingerprint() and "event_types" in renamed.fingerprint()
    base = '[source]\nformat = "csv"\n[columns]\nplayer_id = "u"\nevent_time = "t"\n'
    with pytest.raises(MappingError, match=r"\[event_types\] 'x' = '' must be a non-empty event type"):
        parse_mapping(base + 'event_type = "k"\n[event_types]\nx = ""\n')
    with pytest.raises(MappingError, match=r"map event_type in \[columns\] first"):
        parse_mapping(base + '[constants]\nevent_type = "a"\n[event_types]\nx = "y"\n')


def test_a_re_export_of_a_log_without_ids_is_not_counted_twice(tmp_path):
    from ml_assets.core.events.cleaning import clean_events

    mapping_path = write(tmp_path, "m.toml", MAPPING_TOML)
    landing = tmp_path / "landing"
    ingest(
        write(tmp_path, "a.csv", "user,ts,amount\nu,1700006400,2\nu,1700006400,2\nv,1700092800,3\n"),
        mapping_path,
        landing,
    )
    crlf = "user,ts,amount\r\nu,1700006400,2\r\nu,1700006400,2\r\nv,1700092800,3\r\n"
    assert ingest(write(tmp_path, "b.csv", crlf), mapping_path, landing).landed  # other bytes: a new batch
    result = clean_events(scan_landing(landing), watermark_days=3)
    assert result.clean.height == 3
    assert result.quarantined["reason"].to_list() == ["duplicate_event_id"] * 3


@pytest.mark.parametrize("text", ["abc", "1,5", "NaN", "inf", "-inf", "1e309"])
def test_a_value_that_is_not_a_finite_number_is_quarantined_with_its_text(tmp_path, text):
    from ml_assets.core.events.cleaning import clean_events

    landing = tmp_path / "landing"
    source = f'user,ts,amount\nu,1700006400,2\nv,1700006400,"{text}"\n'
    report = ingest(write(tmp_path, "e.csv", source), write(tmp_path, "m.toml", MAPPING_TOML), landing)
    assert report.unparsed_values == 1
    result = clean_events(scan_landing(landing), watermark_days=3)
    assert result.clean["player_id"].to_list() == ["u"]
    bad = result.quarantined.row(0, named=True)
    assert (bad["player_id"], bad["reason"], bad["value_raw"]) == ("v", "malformed_value", text)


@pytest.mark.parametrize(
    ("time_format", "bad", "reason"),
    [
        ("unix_ms", "1700000000", "event_time_before_earliest"),  # seconds declared as ms: 1970-01-20
        ("unix_s", "4102444800", "event_time_in_future"),  # 2100-01-01
        ("unix_s", "253402214400", "event_time_in_future"),  # 9999-12-31
        ("unix_s", "1700000000000", "malformed_event_time"),  # ms declared as seconds: year 55,800
        ("unix_s", "100000", "event_time_before_earliest"),  # 1970-01-02
    ],
)
def test_an_implausible_time_is_quarantined_and_never_stretches_the_window(
    tmp_path, time_format, bad, reason
):
    from ml_assets.core.events.cleaning import clean_events

    good = "1700000000000" if time_format == "unix_ms" else "1700000000"  # 2023-11-14
    landing = tmp_path / "landing"
    toml = MAPPING_TOML.replace('event_time = "unix_s"', f'event_time = "{time_format}"')
    path = write(tmp_path, "e.csv", f"user,ts,amount\nu,{good},1\nv,{bad},2\n")
    report = ingest(path, write(tmp_path, "m.toml", toml), landing)
    assert (report.first_day, report.last_day) == (date(2023, 11, 14), date(2023, 11, 14))
    window = read_window(landing)
    assert window is not None and (window.first_day, window.last_day) == (report.first_day, report.last_day)
    landed = scan_landing(landing).collect()
    assert landed["partition_date"].to_list() == [date(2023, 11, 14)] * 2  # on the good day
    result = clean_events(scan_landing(landing), watermark_days=3)
    assert result.clean["player_id"].to_list() == ["u"]
    assert result.quarantined.select("player_id", "reason").rows() == [("v", reason)]


def test_a_file_with_no_plausible_time_is_refused_naming_the_unit(tmp_path):
    toml = MAPPING_TOML.replace('event_time = "unix_s"', 'event_time = "unix_ms"')
    path = write(tmp_path, "e.csv", "user,ts,amount\nu,1700000000,1\nv,1700000100,2\n")  # seconds, not ms
    with pytest.raises(IngestError, match=r"no 'ts' value is a plausible time \(from 1990-01-01"):
        ingest(path, write(tmp_path, "m.toml", toml), tmp_path / "landing")
    assert not (tmp_path / "landing").exists() or not list((tmp_path / "landing").glob("*.parquet"))


def test_rfc_4180_quoted_fields_span_lines_and_errors_keep_line_numbers(tmp_path):
    props = 'user,ts,amount,note\n"u",1700000000,1,"two\nlines, ""quoted"""\nv,1700000001,2,plain\n'
    m = mapping(extra_columns='properties = "note"')
    events = read_events(write(tmp_path, "e.csv", props), m)
    assert events["player_id"].to_list() == ["u", "v"]
    assert events["properties"].to_list() == ['two\nlines, "quoted"', "plain"]
    # records after a two-line field keep their own line numbers: w is on line 5
    ragged = props + "w,1700000002\n"
    with pytest.raises(IngestError, match=r"e2\.csv: line 5: expected 4 fields, found 2"):
        read_events(write(tmp_path, "e2.csv", ragged), m)
