"""The evaluation service's pure rules: word counts, evaluations, advancement, publication, spreadsheets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.evaluation import rules
from services.evaluation.rules import DEFAULT_RUBRIC, Criterion, Ranked, count_words
from shared.spreadsheets import spreadsheet_csv

# --- counting words as a person would ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", 0),
        (None, 0),
        ("   \n\t  ", 0),
        ("Inovasi pelayanan publik", 3),
        ("Inovasi   pelayanan\n\n\npublik", 3),  # several spaces and new lines separate, they count nothing
        ("anak-anak bermain", 2),  # Indonesian reduplication is one word
        ("layanan e-KTP keliling", 3),
        ("dan/atau", 1),
        ("Anggaran Rp 1.500.000 untuk 3,5 bulan", 6),  # numbers with separators are one word each
        ("Hasilnya: naik 50%!", 3),
        ("Pertama — lalu … kedua", 3),  # a dash or an ellipsis on its own is no word
        ("• butir satu\n• butir dua", 4),
        ("Jum'at pagi", 2),
        ("Pelayanan (terpadu) satu-pintu, cepat.", 4),
        ("Kaltara 2017", 2),
    ],
)
def test_words_are_counted_the_way_a_person_counts_them(text, words):
    assert count_words(text) == words


def test_a_section_over_its_limit_is_named_with_the_limit_and_the_count():
    problems = rules.section_problems({"summary": "kata " * 201}, complete=False)
    assert problems == {"sections.summary": ["At most 200 words; this has 201."]}


def test_a_section_at_its_limit_is_accepted():
    assert rules.section_problems({"significance": "kata " * 600}, complete=False) == {}


def test_a_draft_may_leave_sections_empty_but_submitting_needs_every_one():
    assert rules.section_problems({}, complete=False) == {}
    missing = rules.section_problems({"summary": "Ringkas."}, complete=True)
    assert set(missing) == {f"sections.{name}" for name in rules.SECTION_LIMITS if name != "summary"}
    assert missing["sections.background"] == ["Required before submitting (at most 300 words)."]


def test_only_a_confirmed_registration_may_submit():
    assert rules.submission_refusal("confirmed") is None
    assert "cancelled" in rules.submission_refusal("cancelled")
    assert "not heard" in rules.submission_refusal(None)


# --- rubrics and evaluations ---------------------------------------------------------------------------------


def test_the_default_rubric_is_the_five_national_criteria_on_one_to_ten_with_equal_weights():
    assert [c.key for c in DEFAULT_RUBRIC] == ["novelty", "effectiveness", "benefit", "replicability", "sustainability"]
    assert {(c.low, c.high, c.weight, c.informational) for c in DEFAULT_RUBRIC} == {(1, 10, 1.0, False)}
    assert DEFAULT_RUBRIC[0].name == {"id": "Kebaruan", "en": "Novelty"}


FULL = {"novelty": 8, "effectiveness": 7, "benefit": 9, "replicability": 6, "sustainability": 7}


def test_a_complete_evaluation_on_the_scale_has_no_problem():
    assert rules.evaluation_problems("rubric", DEFAULT_RUBRIC, FULL) == {}


def test_an_evaluation_is_refused_naming_each_field_and_its_rule():
    scores = {**FULL, "novelty": 11, "charm": 5}
    del scores["benefit"]
    problems = rules.evaluation_problems("rubric", DEFAULT_RUBRIC, scores)
    assert problems == {
        "scores.novelty": ["Must be between 1 and 10."],
        "scores.charm": [
            "Unknown criterion; this round's are: novelty, effectiveness, benefit, replicability, sustainability."
        ],
        "scores.benefit": ["Missing: every counted criterion needs a score."],
    }


def test_an_informational_criterion_may_be_left_out():
    criteria = (
        *DEFAULT_RUBRIC,
        Criterion("presentation", {"id": "Presentasi", "en": "Presentation"}, informational=True),
    )
    assert rules.evaluation_problems("rubric", criteria, FULL) == {}


def test_a_failed_checklist_item_needs_its_reason():
    checklist = rules.DEFAULT_CHECKLIST
    scores = {"form_complete": 1, "implemented": 0, "supporting_material": 1}
    assert rules.evaluation_problems("checklist", checklist, scores) == {
        "reasons.implemented": ["A failed item needs a reason."]
    }
    assert rules.evaluation_problems("checklist", checklist, scores, {"implemented": "Belum berjalan."}) == {}
    assert rules.evaluation_problems("checklist", checklist, {**scores, "implemented": 0.5}, {"implemented": "x"}) == {
        "scores.implemented": ["Must be 1 (pass) or 0 (fail)."]
    }


def test_a_checklist_passes_only_when_every_evaluator_passed_every_item():
    checklist = rules.DEFAULT_CHECKLIST
    passed = {c.key: 1 for c in checklist}
    assert rules.checklist_outcome(checklist, [(passed, {}), (passed, {})]) == (True, None)
    failed = {**passed, "implemented": 0}
    advanced, reason = rules.checklist_outcome(checklist, [(passed, {}), (failed, {"implemented": "Belum berjalan."})])
    assert advanced is False and reason == "Already implemented: Belum berjalan."
    assert rules.checklist_outcome(checklist, []) == (False, "It received no administrative check.")


def test_criteria_of_a_round_are_checked():
    same_key = [DEFAULT_RUBRIC[0], DEFAULT_RUBRIC[0]]
    assert "Each criterion needs its own key." in rules.criteria_problems("rubric", same_key)["criteria"]
    only_info = [Criterion("x", {"id": "x", "en": "x"}, informational=True)]
    assert rules.criteria_problems("rubric", only_info)
    assert rules.criteria_problems("checklist", list(DEFAULT_RUBRIC))  # a checklist is 0/1


# --- advancement ---------------------------------------------------------------------------------------------------

RANKING = [Ranked("a", 1, 8.5), Ranked("b", 2, 7.0), Ranked("c", 3, 6.25), Ranked("d", 4, None)]


def test_top_n_advances_the_first_n_and_tells_the_others_their_place():
    outcome = rules.decide_advancement({"rule": "top_n", "n": 2}, RANKING)
    assert outcome["a"] == (True, None) and outcome["b"] == (True, None)
    assert outcome["c"] == (False, "Ranked 3 of 3; the first 2 advance.")
    assert outcome["d"] == (False, "It received no evaluation in this round.")


def test_a_threshold_advances_every_score_at_or_above_it():
    outcome = rules.decide_advancement({"rule": "threshold", "min": 7}, RANKING)
    assert [outcome[p][0] for p in "abcd"] == [True, True, False, False]
    assert outcome["c"][1] == "Scored 6.25, below the threshold of 7."


def test_the_organisers_decision_leaves_every_ranked_proposal_undecided():
    outcome = rules.decide_advancement({"rule": "decision"}, RANKING)
    assert [outcome[p][0] for p in "abc"] == [None, None, None]


# --- publication and objections --------------------------------------------------------------------------------

NOW = datetime(2027, 5, 1, tzinfo=UTC)


def test_results_are_published_after_the_round_closes_and_the_final_list_after_the_window():
    assert "Close the round" in rules.publication_refusal("open", None, None, None, 0, NOW)
    assert rules.publication_refusal("closed", None, None, None, 0, NOW) is None
    deadline = NOW + timedelta(days=3)
    assert "objection window" in rules.publication_refusal("closed", NOW, None, deadline, 0, NOW + timedelta(days=1))
    assert "await an answer" in rules.publication_refusal("closed", NOW, None, deadline, 1, deadline)
    assert rules.publication_refusal("closed", NOW, None, deadline, 0, deadline) is None
    assert "already published" in rules.publication_refusal("closed", NOW, deadline, deadline, 0, deadline)


def test_objections_are_taken_only_within_the_window():
    deadline = rules.objection_deadline(NOW, 3)
    assert deadline == NOW + timedelta(days=3)
    assert rules.objection_deadline(NOW, 0) is None
    assert rules.objection_refusal(NOW, deadline, NOW + timedelta(days=1)) is None
    assert "closed" in rules.objection_refusal(NOW, deadline, deadline)
    assert "not open to objections" in rules.objection_refusal(None, None, NOW)


# --- spreadsheets and the chart ------------------------------------------------------------------------------------


def test_the_csv_has_a_bom_and_neutralises_formula_cells_but_not_numbers():
    document = spreadsheet_csv(["title", "mean"], [['=HYPERLINK("x")', -1.5], ["@SUM(A1)", 7]])
    text = document.decode("utf-8")
    assert text.startswith("\ufefftitle,mean")
    assert "'=HYPERLINK" in text and "'@SUM(A1)" in text and ",-1.5" in text


def test_the_histogram_counts_every_point_of_the_scale():
    assert rules.score_histogram([1, 1.4, 9.6, 10, 5], 1, 10) == [
        (1, 2),
        (2, 0),
        (3, 0),
        (4, 0),
        (5, 1),
        (6, 0),
        (7, 0),
        (8, 0),
        (9, 0),
        (10, 2),
    ]


def test_a_comment_s_line_breaks_are_stored_one_way_whoever_sent_them():
    assert rules.one_line_ending("satu\r\ndua\rtiga\nempat") == "satu\ndua\ntiga\nempat"
    assert rules.one_line_ending(None) is None
