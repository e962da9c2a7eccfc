from datetime import date

from ml_assets.core.days import day_chunks, next_chunk_days


def test_day_chunks_cover_the_window():
    chunks = day_chunks(date(2024, 1, 1), date(2024, 1, 10), 4)
    assert chunks == [
        (date(2024, 1, 1), date(2024, 1, 4)),
        (date(2024, 1, 5), date(2024, 1, 8)),
        (date(2024, 1, 9), date(2024, 1, 10)),
    ]


def test_rows_not_days_size_the_next_chunk():
    assert next_chunk_days(7, 700, 7, 300_000) == 14  # small days: double, at most
    assert next_chunk_days(56, 56_000, 7, 300_000) == 112
    assert next_chunk_days(112, 280_000, 7, 300_000) == 120  # as many days as fit
    assert next_chunk_days(7, 700_000, 7, 300_000) == 7  # big days: never below the configured chunk
    assert next_chunk_days(7, 0, 7, 300_000) == 14  # empty days
    assert next_chunk_days(14, 10, 7, 0) == 7  # growth off
