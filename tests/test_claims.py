"""The one rule that decides claims, on hand-made numbers."""

import json
import math

import prunebook
import pytest
from prunebook import claims, config
from prunebook.claims import all_of, equivalent, every_run, exact, exceeds, half_width, interval, paired, seeds_needed

CONFIGS = {"smoke": {"n": 1}, "cpu": {"n": 2}}


def test_t_interval_matches_the_textbook():
    # mean 2, s.d. 2/sqrt(3), n = 4: half-width t(0.975, 3) * s.d. / sqrt(4)
    mean, lo, hi = interval([1, 3, 1, 3])
    assert mean == 2
    assert hi - mean == pytest.approx(3.182446 * (2 / math.sqrt(3)) / 2, rel=1e-5)
    assert mean - lo == pytest.approx(hi - mean)


def test_one_seed_has_no_interval_and_decides_nothing():
    assert interval([0.3]) == (0.3, -math.inf, math.inf)
    d = paired([0.9], [0.1])
    assert d.verdict == "inconclusive" and "one seed" in d.measured


def test_clear_win_clear_loss_and_noise():
    a = [0.80, 0.81, 0.82, 0.80, 0.81, 0.82]
    better = [x + 0.05 + e for x, e in zip(a, (0.001, -0.002, 0.0, 0.002, -0.001, 0.0))]
    noisy = [x + e for x, e in zip(a, (0.03, -0.02, 0.01, -0.03, 0.02, -0.005))]
    assert paired(better, a, side=">").verdict == "holds"
    assert paired(a, better, side=">").verdict == "fails"
    assert paired(a, better, side="<").verdict == "holds"
    assert paired(noisy, a, side=">").verdict == "inconclusive"


def test_a_paper_margin_moves_the_line():
    a, b = [1.0, 1.1, 0.9, 1.0], [0.0, 0.0, 0.0, 0.0]        # a − b ≈ 1.0 ± 0.13
    assert paired(a, b, side=">", margin=0.5).verdict == "holds"
    assert paired(a, b, side=">", margin=1.5).verdict == "fails"
    assert paired(a, b, side=">", margin=1.0).verdict == "inconclusive"


def test_pairing_removes_the_shared_seed_effect():
    # seeds differ by a lot, the arms by a little, always in the same direction: paired, that is a clear win
    b = [0.60, 0.70, 0.80, 0.90]
    a = [x + 0.01 for x in b]
    assert paired(a, b).verdict == "holds"


def test_equivalence_inside_outside_and_straddling():
    b = [0.5, 0.6, 0.7, 0.8, 0.5, 0.6]
    inside = [x + e for x, e in zip(b, (0.002, -0.001, 0.0, 0.001, -0.002, 0.001))]
    outside = [x + 0.1 + e for x, e in zip(b, (0.002, -0.001, 0.0, 0.001, -0.002, 0.001))]
    straddle = [x + 0.02 + e for x, e in zip(b, (0.02, -0.02, 0.01, -0.01, 0.02, -0.02))]
    assert equivalent(inside, b, margin=0.01).verdict == "holds"
    assert equivalent(outside, b, margin=0.01).verdict == "fails"
    assert equivalent(straddle, b, margin=0.02).verdict == "inconclusive"
    with pytest.raises(ValueError, match="positive"):
        equivalent(inside, b, margin=0)


def test_threshold_over_seeds_and_exact_values():
    assert exceeds([0.86, 0.87, 0.85], threshold=0.80).verdict == "holds"
    assert exceeds([0.86, 0.84, 0.85], threshold=0.85).verdict == "inconclusive"
    assert exceeds([0.70, 0.71, 0.69], threshold=0.80).verdict == "fails"
    assert exceeds([0.02, 0.03, 0.01], threshold=0.10, side="<").verdict == "holds"
    assert exact(15, threshold=10).verdict == "holds"
    assert exact(10, threshold=10).verdict == "inconclusive"
    assert exact(10, threshold=10, inclusive=True).verdict == "holds"
    assert exact(3, threshold=10).verdict == "fails"


def test_bootstrap_is_deterministic_and_inside_the_range():
    x = [0.1, 0.4, 0.2, 0.3, 0.25]
    assert interval(x, method="bootstrap") == interval(x, method="bootstrap")
    mean, lo, hi = interval(x, method="bootstrap")
    assert 0.1 <= lo < mean < hi <= 0.4
    with pytest.raises(ValueError, match="method"):
        interval(x, method="z")


def test_all_of_needs_every_part():
    win, noise, loss = exact(2, threshold=1), exact(1, threshold=1), exact(0, threshold=1)
    assert all_of(win, win).verdict == "holds"
    assert all_of(win, noise).verdict == "inconclusive"
    assert all_of(win, noise, loss).verdict == "fails"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="one value per seed"):
        paired([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="side"):
        paired([1, 2], [0, 1], side=">=")
    with pytest.raises(ValueError, match="finite"):
        interval([1.0, float("nan")])


def test_paper_claims_need_the_rule_and_a_kind(in_series):
    config.resolve(CONFIGS, "cpu", verbose=False)
    table = prunebook.Claims("01_demo")
    with pytest.raises(ValueError, match="kind"):
        table.add("a", "x", "y", paper=1, holds=True, kind="claim")
    with pytest.raises(ValueError, match="decided by prunebook.claims"):
        table.add("a", "x", "y", paper=1, measured=1, holds=True, kind="paper")
    with pytest.raises(ValueError, match="exactly one"):
        table.add("a", "x", "y", paper=1, kind="control")
    c = table.add("a", "x", "y", paper=1, kind="paper", decision=paired([1, 2, 3], [0, 1, 3.5]), faithful=True)
    assert c.verdict == "inconclusive" and c.holds is False and c.test == "paired t, 3 seeds"


def test_tally_counts_faithful_paper_claims_apart():
    cs = [{"id": "a", "kind": "paper", "verdict": "holds", "faithful": True},
          {"id": "b", "kind": "paper", "verdict": "inconclusive", "faithful": True},
          {"id": "c", "kind": "paper", "verdict": "fails", "faithful": False, "unfaithful_because": "too short"},
          {"id": "d", "kind": "check", "verdict": "holds"}, {"id": "e", "kind": "control", "verdict": "fails"},
          {"id": "f", "kind": "paper", "verdict": "smoke", "faithful": True}]      # smoke proves nothing
    t = claims.tally(cs)
    assert t["paper"] == {"holds": 1, "fails": 0, "inconclusive": 1}
    assert t["unfaithful"] == {"holds": 0, "fails": 1, "inconclusive": 0}
    assert claims.summary(cs) == (
        "faithful paper claims: 1 hold, 1 inconclusive, 0 fail; 1 paper claim not faithful (0 hold, 0 inconclusive, "
        "1 fail); controls 0/1 hold; checks 1/1 hold")


def test_a_paper_claim_without_its_flag_is_refused(in_series):
    config.resolve(CONFIGS, "cpu", verbose=False)
    table = prunebook.Claims("01_demo")
    with pytest.raises(ValueError, match="kind=None"):
        table.add("old", "x", "y", paper=1, measured=1, holds=True)
    with pytest.raises(ValueError, match="faithful"):
        claims.tally([{"id": "old", "kind": "paper", "verdict": "holds"}])


def test_paired_names_its_units():
    d = paired([1.0, 2.0, 3.0], [0.0, 0.5, 1.0], units="cells")
    assert d.test == "paired t, 3 cells"
    assert "per cell" in d.measured and "seed" not in d.measured


def test_bootstrap_decisions_are_named_so():
    assert paired([1.0, 2.0, 3.0], [0.0, 0.5, 1.0], method="bootstrap").test == "paired bootstrap, 3 seeds"
    assert exceeds([1.0, 2.0, 3.0], threshold=0, method="bootstrap").test == "bootstrap, 3 seeds"


def test_paper_claims_say_whether_their_test_is_faithful(in_series):
    config.resolve(CONFIGS, "cpu", verbose=False)
    table = prunebook.Claims("01_demo")
    d = paired([1, 2, 3], [0, 1, 2])
    with pytest.raises(ValueError, match="faithful"):
        table.add("a", "x", "y", paper=1, kind="paper", decision=d)
    with pytest.raises(ValueError, match="exactly when faithful=False"):
        table.add("a", "x", "y", paper=1, kind="paper", decision=d, faithful=False)
    with pytest.raises(ValueError, match="exactly when faithful=False"):
        table.add("a", "x", "y", paper=1, kind="paper", decision=d, faithful=True, unfaithful_because="why")
    with pytest.raises(ValueError, match="only paper claims"):
        table.add("a", "x", "y", paper=1, kind="control", decision=d, faithful=True)
    c = table.add("a", "x", "y", paper=1, kind="paper", decision=d, faithful=False,
                  unfaithful_because="a schedule far shorter than the paper's")
    assert c.faithful is False and "shorter" in c.unfaithful_because
    assert "no: a schedule" in table.table()["faithful"].iloc[0]


def test_paper_claims_pair_over_replicates_only(in_series):
    config.resolve(CONFIGS, "cpu", verbose=False)
    table = prunebook.Claims("01_demo")
    rounds = paired([1.0, 2.0, 3.0], [0.0, 0.5, 1.0], units="timing rounds")
    with pytest.raises(ValueError, match="not over timing rounds"):
        table.add("t", "x", "y", paper=1, kind="paper", decision=rounds, faithful=True)
    with pytest.raises(ValueError, match="not over cells"):      # one part over grid cells is enough to refuse
        table.add("t", "x", "y", paper=1, kind="paper", faithful=True,
                  decision=all_of(paired([1, 2, 3], [0, 1, 2]), paired([1, 2, 3], [0, 1, 2], units="cells")))
    assert table.add("t", "x", "y", paper=1, kind="check", decision=rounds).verdict == "holds"
    for d in (paired([1, 2, 3], [0, 1, 2], units="trainings"), exact(3, threshold=1),
              every_run([0.5, 0.49], target=0.5, tolerance=0.01)):
        table.add(f"ok-{d.units}", "x", "y", paper=1, kind="paper", decision=d, faithful=True)


def test_holm_keeps_many_conditions_from_failing_more_easily():
    # on the other side at 95 % (t interval [−2.42, −0.58]) but not at 1 − 0.05/4 ([−3.06, +0.06])
    wrong = paired([0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 1.0, 2.0])
    assert wrong.verdict == "fails"
    assert wrong.at_level(1 - 0.05 / 4) == "inconclusive"
    noise = paired([1.0, -1.0, 0.5, -0.5], [0, 0, 0, 0])
    win = paired([1.0, 1.1, 0.9, 1.0], [0, 0, 0, 0])
    assert all_of(wrong).verdict == "fails"                    # one condition: no correction
    four = all_of(wrong, noise, noise, noise)
    assert four.verdict == "inconclusive" and "Holm over 4 parts" in four.test
    assert "1 of 4 parts on the other side at 95 %, 0 after Holm" in four.measured
    clear = paired([0.0, 0.0, 0.0, 0.0], [1.0, 1.01, 0.99, 1.0])  # far on the other side at any level
    assert all_of(clear, noise, noise, noise).verdict == "fails"
    assert all_of(win, win, win).verdict == "holds"            # holds needs every part at 95 %, no correction
    assert all_of(win, noise).verdict == "inconclusive"


def test_holm_steps_down():
    # two parts on the other side: the first at 1 − α/2, the second only at 1 − α once the first is out
    strong = paired([0.0] * 5, [1.0, 1.01, 0.99, 1.0, 1.0])
    weak = paired([0.0] * 4, [0.7, 2.3, 1.0, 2.0])
    assert weak.at_level(1 - 0.05 / 2) == "inconclusive" and weak.at_level(0.95) == "fails"
    assert claims.holm_failures([strong, weak]) == 2
    assert claims.holm_failures([weak, weak]) == 0


def test_equivalence_and_thresholds_recompute_at_another_level():
    b = [0.5, 0.6, 0.7, 0.8]
    near = [x + 0.02 + e for x, e in zip(b, (0.002, -0.002, 0.001, -0.001))]
    d = equivalent(near, b, margin=0.015)
    assert d.verdict == "fails" and d.at_level(0.999999) == "inconclusive"
    e = exceeds([0.86, 0.87, 0.85], threshold=0.80)
    assert e.at_level(0.95) == "holds" and e.at_level(0.9999) == "inconclusive"
    assert exact(3, threshold=10).at_level(0.9999) == "fails"


def test_compliance_is_decided_run_by_run():
    assert every_run([0.495, 0.502, 0.509], target=0.5, tolerance=0.01).verdict == "holds"
    d = every_run([0.495, 0.520, 0.501], target=0.5, tolerance=0.01, scale=100, unit=" points")
    assert d.verdict == "fails" and d.units == "runs"
    assert d.measured.startswith("1 of 3 runs outside ±1.00 points of 50.00 points")


def test_power_helper_matches_the_t_interval():
    x = [1.0, 3.0, 1.0, 3.0]                                    # s.d. 2/sqrt(3)
    mean, lo, hi = interval(x)
    assert half_width(2 / math.sqrt(3), 4) == pytest.approx(hi - mean)
    assert half_width(1.0, 1) == math.inf
    n = seeds_needed(1.0, 0.5)
    assert half_width(1.0, n) < 0.5 <= half_width(1.0, n - 1)
    assert seeds_needed(1.0, 1e-4, most=50) == 51
    with pytest.raises(ValueError, match="positive"):
        seeds_needed(1.0, 0)


def test_results_name_the_code_that_made_them(in_series):
    (in_series / "method.py").write_text("ALPHA = 1\n")
    config.resolve(CONFIGS, "cpu", verbose=False)
    table = prunebook.Claims("01_demo")
    table.add("c", "x", "y", paper=1, kind="check", holds=True)
    first = json.loads(table.save().read_text())["code"]
    assert first["commit"].startswith("unknown") and first["method"] == "method.py"
    (in_series / "checks.py").write_text("LAB = 1\n")             # a course lab's checks make no result
    assert claims.provenance(in_series)["method_sha256"] == first["method_sha256"]
    (in_series / "method.py").write_text("ALPHA = 2\n")           # one changed constant changes the hash
    second = claims.provenance(in_series)
    assert second["method_sha256"] != first["method_sha256"]
    assert second["prunebook_sha256"] == first["prunebook_sha256"] and len(second["method_sha256"]) == 16


def test_a_dry_runs_results_say_so(in_series, monkeypatch, capsys):
    monkeypatch.setenv("PRUNEBOOK_DRY_RUN", "1")
    config.resolve({**CONFIGS, "paper": CONFIGS["cpu"]}, "paper", verbose=False)
    table = prunebook.Claims("01_demo")
    table.add("c", "x", "y", paper=1, kind="check", holds=True)
    saved = json.loads(table.save().read_text())
    assert saved["profile"] == "paper" and saved["dry_run"] is True
    assert "in a dry run (which proves nothing)" in capsys.readouterr().out
    assert table.path().parent.name == "paper-dry"
