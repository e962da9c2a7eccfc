"""Day pieces: cut by calendar where days are big, by rows where a long log's days are thin."""

from datetime import date

import pytest

from ml_assets.core.days import day_chunks, piece_days


def test_thin_days_merge_into_pieces_of_at_most_max_rows():
    # 546 days of 130 rows: one piece of every day when the budget holds them all
    assert piece_days([130] * 546, 7, 100_000) == 546
    # a budget of 1,000 rows: 7 days (910 rows) fit, 8 (1,040) do not
    assert piece_days([130] * 546, 1, 1_000) == 7


def test_a_busy_run_of_days_bounds_the_piece_everywhere():
    # quiet days but one busy week in the middle: the piece is sized by its busiest run
    counts = [10] * 100 + [400] * 7 + [10] * 100
    days = piece_days(counts, 3, 3_000)
    windows = [sum(counts[i : i + days]) for i in range(len(counts) - days + 1)]
    assert max(windows) <= 3_000 < max(sum(counts[i : i + days + 1]) for i in range(len(counts) - days))


def test_big_days_keep_the_configured_days_and_short_windows_are_one_piece():
    assert piece_days([111_000] * 90, 7, 500_000) == 7  # 777k rows a week: as memory was sized for
    assert piece_days([5] * 4, 7, 10) == 7  # a window shorter than a piece
    assert day_chunks(date(2024, 1, 1), date(2024, 1, 4), piece_days([5] * 4, 7, 10)) == [
        (date(2024, 1, 1), date(2024, 1, 4))
    ]
    with pytest.raises(ValueError, match="at least 1 day"):
        piece_days([1, 2], 0, 10)
