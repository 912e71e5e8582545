"""The decontamination matcher (rsr.curate.decontaminate) on problems we wrote: what real leaks look like is found
(verbatim, reformatted inside a longer prompt, numbers changed, a short problem word for word), clean problems of
the same style are not, and each hit names its benchmark row, method and the text that matched."""

from __future__ import annotations

import random

from rsr.curate.decontaminate import (
    BenchmarkProblem,
    DistinctPrompts,
    Matcher,
    benchmark_label,
    check_set_name,
    prompt_segments,
    words,
)

# Our own word problems (a benchmark of four), and clean ones of the same style.
BENCH = [
    "A farmer has 120 sheep and sells one third of them at the market. He then buys 15 lambs from his neighbour. "
    "How many sheep and lambs does the farmer have now?",
    "The sum of three consecutive even integers is 78. What is the largest of the three integers?",
    "Maria reads 25 pages of her book every weekday and 40 pages on each day of the weekend. How many pages does "
    "she read in two full weeks?",
    "Compute $\\dfrac{3}{4} + \\dfrac{5}{6}$.",
]
CLEAN = [
    "A baker has 80 loaves of bread and sells half of them before noon. He then bakes 30 more loaves. How many "
    "loaves does the baker have at closing time?",
    "The product of two consecutive odd integers is 143. What is the smaller of the two integers?",
    "Leo swims 12 laps every morning and runs 5 kilometres every evening. How far does he run in a month of 30 days?",
    "Compute $\\dfrac{1}{2} + \\dfrac{1}{3}$.",
]


def matcher() -> Matcher:
    return Matcher([BenchmarkProblem("ours", row, text) for row, text in enumerate(BENCH)])


def test_words_are_compared_normalised() -> None:
    assert words("The  SUM, of 1,000\tand $\\dfrac{1}{2}$!") == ["the", "sum", "of", "1000", "and", "1", "2"]
    assert words("\\left( x \\right)\\,\\quad \\text{and} y~z") == ["x", "and", "y", "z"]
    assert words("ｆｕｌｌ－ｗｉｄｔｈ ３") == ["full", "width", "3"]  # NFKC
    assert words("数学题") == ["数", "学", "题"]  # CJK: a character is a word


def test_real_leaks_are_found_with_their_row_method_and_evidence() -> None:
    m = matcher()
    prompts = [
        [BENCH[0]],  # verbatim
        [f"Please solve this for me.\n\n**Problem:** {BENCH[2].upper().replace(' ', '  ')}\n\nThanks!"],  # reformatted
        [BENCH[0].replace("120", "90").replace("15", "22").replace("one third", "two thirds")],  # numbers changed
        ["compute  3/4 + 5/6 ?"],  # a short problem, word for word (its LaTeX and spacing aside)
        ["Some context first.", BENCH[1]],  # the problem in a later user turn
    ]
    hits = m.match(prompts)
    assert [[(h.row, h.method) for h in hs] for hs in hits] == [
        [(0, "exact")], [(2, "ngram")], [(0, "ngram_numbers")], [(3, "exact")], [(1, "exact")]
    ]  # fmt: skip
    assert all(h.benchmark == "ours" and 0 < h.share <= 1 for hs in hits for h in hs)
    inside = hits[1][0]
    assert inside.share == 1.0 and inside.evidence.startswith("MARIA READS 25 PAGES")
    assert "Please" not in inside.evidence
    assert hits[2][0].evidence.startswith("A farmer has 90 sheep")


def test_clean_problems_of_the_same_style_are_not_flagged() -> None:
    m = matcher()
    assert m.match([[c] for c in CLEAN]) == [[], [], [], []]
    # a short benchmark problem inside a longer prompt is not claimed (too short to tell from its template)
    assert m.match([["Compute $\\dfrac{3}{4} + \\dfrac{5}{6}$. Then compute the same for 7/8."]]) == [[]]


def test_a_phrase_many_problems_share_is_no_proof() -> None:
    """One shared 8-gram flags nothing: a hit needs a share of the problem's n-grams, and n-grams common to many
    benchmark problems are left out."""
    stem = "how many apples does the farmer have left at the end of the day"
    bench = [f"On day {i} a farmer picks {i * 3} apples and gives {i} away to friends. {stem}?" for i in range(40)]
    m = Matcher([BenchmarkProblem("apples", i, t) for i, t in enumerate(bench)])
    assert m.match([[f"A farmer sells pears at the market for a good price. {stem}?"]]) == [[]]
    assert [h.row for h in m.match([[bench[7]]])[0]] == [7]


def test_each_distinct_prompt_is_matched_once_and_labels_name_what_was_checked() -> None:
    seen = DistinctPrompts(matcher())
    prompts = [[BENCH[0]], [CLEAN[0]], [BENCH[0]], [CLEAN[0]]] * 3
    hits = seen.match(prompts) + seen.match(prompts)
    assert seen.matched == 2 and [bool(h) for h in hits] == [True, False, True, False] * 6
    assert prompt_segments("P", ["P", None, " ", "Q"]) == ["P", "Q"] and prompt_segments("P", ["Q"]) == ["P", "Q"]
    one, other = benchmark_label("b", "d" * 64, 8), benchmark_label("b", "d" * 64, 13)
    assert one != other and check_set_name([one, other]) == check_set_name([other, one])


def test_benchmarks_with_their_own_n_are_matched_each_with_theirs() -> None:
    m = Matcher([BenchmarkProblem("n8", 0, BENCH[0]), BenchmarkProblem("n13", 5, BENCH[2], n=13)])
    rng = random.Random(0)
    noisy = " ".join(w.upper() if rng.random() < 0.5 else w for w in BENCH[2].split())
    assert [(h.benchmark, h.row) for hs in m.match([[BENCH[0]], [noisy]]) for h in hs] == [("n8", 0), ("n13", 5)]


def test_texts_beyond_ascii_are_read_the_same_way_in_any_batch() -> None:
    """ASCII texts take a faster path than the others (NFKC, CJK): the same words either way, in the same order."""
    m = matcher()
    mixed = [["Résumé first. " + BENCH[1]], [BENCH[1]], ["数学: " + BENCH[2]], ["ｃｏｍｐｕｔｅ ３/４ ＋ ５/６"]]
    alone = [m.match([p])[0] for p in mixed]
    assert m.match(mixed) == alone
    assert [[(h.row, h.method) for h in hs] for hs in alone] == [[(1, "ngram")], [(1, "exact")], [(2, "ngram")],
                                                                  [(3, "exact")]]  # fmt: skip
    assert alone[0][0].evidence.startswith("The sum of three") and alone[2][0].evidence.startswith("Maria reads")
