"""bench/backbones.py's arithmetic: per-round ratios to the first variant, then the median.

The measurements themselves are the bench's job (speed is never asserted in unit tests); this
checks that the table it prints for the model card says what the rounds measured.
"""

from __future__ import annotations

from bench.backbones import Variant, ratios, table


def test_ratios_are_taken_round_by_round_and_costs_are_inverted() -> None:
    # the base slows down in round 2 with the other variant: per round the other is always half
    # as fast, though a ratio of medians (8 / 20) would say 0.4
    base, other = [20.0, 10.0, 8.0], [10.0, 5.0, 4.0]
    assert ratios([base, other]) == [1.0, 0.5]
    assert ratios([[5.0, 6.0, 7.0], [10.0, 12.0, 21.0]], cost=True) == [1.0, 0.5]


def test_the_table_gives_the_expected_quiet_limit_from_the_cpu_ratio() -> None:
    today = Variant("efficientnet_lite0", 192, raw=[90, 60, 70], raw_cpu=[6.0, 7.0, 6.5],
                    train=[20, 18, 19], train_cpu=[30, 32, 31])
    bigger = Variant("efficientnet_lite2", 224, raw=[40, 50, 30], raw_cpu=[12.0, 14.0, 13.0],
                     train=[9, 8, 9], train_cpu=[60, 64, 62])
    lines = table([today, bigger], "python bench/backbones.py").splitlines()
    assert lines[0] == "`python bench/backbones.py`"
    assert lines[-2].startswith("| lite0@192 |") and "| 1.00 (1.00) | 177-195 |" in lines[-2]
    # CPU ratio 0.50 -> half of today's 177-195 img/s; wall ratio median(40/90, 50/60, 30/70) = 0.44
    assert lines[-1].startswith("| lite2@224 | 40 / 50 / 30 | 12.0 / 14.0 / 13.0 | 0.50 (0.44) | 88-98 |")
    assert lines[-1].endswith("| 60 / 64 / 62 | 0.50 |")
