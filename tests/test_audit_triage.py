from __future__ import annotations

from mieruka.audit.localization import LocalizationScores
from mieruka.audit.triage import REVIEW_HEADER, AuditConfig, review_list, triage


def _scores(hit: bool, components: int = 1, share: float = 1.0) -> LocalizationScores:
    return LocalizationScores(
        energy_inside=0.5,
        area_fraction=0.1,
        lift=5.0,
        pointing_hit=hit,
        relevance_rank=0.5,
        average_precision=0.5,
        iou=0.3,
        dice=0.4,
        attended_fraction=0.2,
        iou_at_area=0.25,
        dice_at_area=0.4,
        components=components,
        largest_component_share=share,
    )


def test_triage_categories() -> None:
    cfg = AuditConfig()
    assert triage(True, _scores(True), cfg) == "correct_on_target"
    assert triage(True, _scores(False), cfg) == "correct_off_target"
    assert triage(False, _scores(True), cfg) == "wrong_on_target"
    assert triage(False, _scores(False), cfg) == "wrong_off_target"
    assert triage(False, _scores(False, components=4, share=0.3), cfg) == "wrong_fragmented"
    assert triage(False, _scores(False, components=4, share=0.7), cfg) == "wrong_off_target"
    assert triage(True, None, cfg) == "no_region"
    assert triage(True, _scores(True), cfg, ok_class=True) == "marked_ok"  # a scratch that passes: scored apart
    assert triage(False, _scores(False), cfg, ok_class=True) == "marked_ok"
    assert triage(True, None, cfg, ok_class=True) == "no_region"


def _row(image: str, correct: bool, probability: float, category: str, **kw: object) -> dict[str, object]:
    return {
        "image": image,
        "method": "gradcam",
        "true": "crack",
        "predicted": "crack" if correct else "good",
        "probability": probability,
        "correct": correct,
        "true_verdict": "NG",
        "predicted_verdict": "NG" if correct else "OK",
        "category": category,
        **kw,
    }


def test_review_list_ranks_escapes_first_and_says_why() -> None:
    rows = [
        _row("fine.png", True, 0.99, "correct_on_target"),
        _row("off.png", True, 0.95, "correct_off_target"),
        _row("escape.png", False, 0.95, "wrong_off_target"),
        _row("unsure.png", True, 0.5, "correct_on_target"),
    ]
    review = review_list(rows, AuditConfig())
    assert len(REVIEW_HEADER) == len(review[0])
    assert [r[1] for r in review] == ["escape.png", "off.png", "unsure.png"]  # a confident, on-target one is fine
    assert [r[0] for r in review] == [1, 2, 3]
    # 3 (wrong) + 1 (confident: check the label) + 2 (escape)
    assert review[0][7] == "6.000" and "escape: a defect would pass" in review[0][8]
    assert review[1][7] == "2.000" and "right for the wrong reason" in review[1][8]
    assert review[2][7] == "0.500" and "low confidence (0.50)" in review[2][8]
