"""The 08_data_pruning lab's checks (``exercises.ipynb``): each exercise's function against ``data_pruning/``, the
code the series runs, on fresh random cases from a seed; the integration exercise runs the series' pruned-perceptron
simulation with the student's keep rule patched in and compares its claims table with the reference run's.
``course.check("08.2", fn)`` imports this file (with this folder on ``sys.path``)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import data_pruning as dp
import numpy as np
import torch
from prunebook import claims, config, course
from prunebook.course import exercise

# ---------------------------------------------------------------- 08.1 · EL2N, averaged over models


def _close(got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> bool:
    return bool(((got - want).abs() <= atol + rtol * want.abs()).all())


def _call(student: Callable, case: str, *args: Any) -> Any:
    """``course.call`` of the student's function, which must leave its tensor arguments as they were."""
    kept = [a.clone() if torch.is_tensor(a) else a for a in args]
    got = course.call(student, case, *args)
    assert all(not torch.is_tensor(a) or torch.equal(a, b) for a, b in zip(args, kept)), f"{case} changed its inputs"
    return got


def _logits_case(g) -> tuple[torch.Tensor, torch.Tensor]:
    """R×n×C logits of R models (some examples confidently right, some confidently wrong) and n labels."""
    runs, n, c = course.randint(g, 1, 5), course.randint(g, 1, 30), course.randint(g, 2, 10)
    logits = course.uniform(g, 0.5, 5.0) * torch.randn(runs, n, c, generator=g)
    labels = torch.randint(0, c, (n,), generator=g)
    return logits, labels


@exercise("08.1", "el2n_scores", points=2)
def _check_el2n(student, g) -> int:
    """Goal: EL2N: the L2 norm of each example's error vector softmax − one-hot, one value per model, averaged over the
    models

    Hint: notebook 02, section 'Four metrics' (EL2N): for each model r, p = softmax(logits[r]) over the classes and
    EL2N_r = ‖p − onehot(y)‖₂ (the plain norm, not its square, of the probabilities, not the logits); the score is the
    mean of EL2N_r over the R models (average the norms, not the vectors)
    """
    n = 0
    for _ in range(16):
        logits, labels = _logits_case(g)
        case = f"el2n_scores(logits of shape {tuple(logits.shape)}, labels {course.brief(labels)})"
        got = _call(student, case, logits, labels)
        n += 1
        got = torch.as_tensor(got).detach().double()
        want = torch.stack([dp.el2n(x, labels) for x in logits]).mean(0).double()  # as dp.supervised_scores
        assert tuple(got.shape) == tuple(want.shape), (f"{case}: the scores have shape {tuple(got.shape)}, not "
                                                       f"{tuple(want.shape)} (one per example)")
        if not _close(got, want, 1e-4, 1e-6):
            onehot = torch.nn.functional.one_hot(labels, logits.shape[-1]).double()
            err = logits.double().softmax(-1) - onehot
            why = ""
            if _close(got, (err.mean(0)).norm(dim=-1), 1e-4, 1e-6) and logits.shape[0] > 1:
                why = " (this is the norm of the mean error vector: average the R norms instead)"
            elif _close(got, err.norm(dim=-1).pow(2).mean(0), 1e-4, 1e-6):
                why = " (this is the squared norm)"
            elif _close(got, err[0].norm(dim=-1), 1e-4, 1e-6) and logits.shape[0] > 1:
                why = " (these are the first model's scores only)"
            elif _close(got, err.norm(dim=-1).sum(0), 1e-4, 1e-6) and logits.shape[0] > 1:
                why = " (the sum over the models, not the mean)"
            i = int(((got - want).abs()).argmax())
            raise AssertionError(f"{case}: example {i} scores {got[i]:.6f}, the series {want[i]:.6f} (relative error "
                                 f"{course.rel_error(got, want):.2g}){why}")
        assert bool((got >= -1e-9).all() and (got <= math.sqrt(2) + 1e-6).all()), f"{case}: EL2N lies in [0, √2]"
    return n


# ---------------------------------------------------------------- 08.2 · keeping the hardest or the easiest fraction


def _score_case(g) -> tuple[torch.Tensor, float, str]:
    """Scores (one row, or a few rows as the perceptron batches them), ties included, a keep fraction and rule."""
    n = course.randint(g, 1, 24)
    shape = (n,) if course.randint(g, 0, 1) else (course.randint(g, 2, 4), n)
    if course.randint(g, 0, 2) == 0:  # few distinct values: many ties
        score = torch.randint(0, 4, shape, generator=g).double()
    else:
        score = torch.randn(shape, generator=g, dtype=torch.float64)
    frac = (0.5, 0.3, 0.1, 0.25, 0.7, 0.9, 1.0, 0.05)[course.randint(g, 0, 7)]
    return score, frac, ("hard", "easy")[course.randint(g, 0, 1)]


@contextlib.contextmanager
def patched_keep(fn: Callable | None) -> Iterator[list[int]]:
    """The series' perceptron simulation with ``dp.keep_indices`` replaced by ``fn(score, frac, keep)`` for the
    ``hard`` and ``easy`` rules (a ``random`` keep stays the series'); yields a list that counts the calls. Nothing
    is replaced when ``fn`` is None."""
    calls: list[int] = []
    if fn is None:
        yield calls
        return
    where = dp.sample_pruned_perceptron.__globals__  # the module the simulation looks the rule up in
    original = where["keep_indices"]

    def keep_indices(score, frac, keep="hard", generator=None):
        if keep == "random":
            return original(score, frac, keep, generator)
        calls.append(1)
        return torch.as_tensor(fn(score, frac, keep)).long()

    where["keep_indices"] = keep_indices
    try:
        yield calls
    finally:
        where["keep_indices"] = original


LAB_RUN = {"dim": 20, "trials": 4, "frac": 0.5, "alpha_tot": [1.0, 8.0], "n_seeds": 3, "sim_rel_error": 0.10}


def lab_sims(keep: Callable | None, run: dict, seeds: Sequence[int]) -> dict[int, dict[str, np.ndarray]]:
    """The series' simulation (``dp.simulate_perceptron``, as notebook 01's easy-or-hard comparison runs it) for each
    seed, with ``keep`` patched in as the keep rule (the series' when None): keep a fraction ``frac`` of
    ``alpha_tot·dim`` examples, hard or easy, and f = 1 (no pruning, the random arm)."""
    alphas = [run["frac"] * a for a in run["alpha_tot"]]
    with patched_keep(keep) as calls:
        sims = {s: dp.simulate_perceptron(alphas, [run["frac"], 1.0], run["dim"], run["trials"],
                                          keeps=("hard", "easy"), seed=s) for s in seeds}
    if keep is not None:
        assert calls, "the simulation never called your keep rule (the patch did not take)"
    return sims


def lab_theory(run: dict) -> dict[str, np.ndarray]:
    """The replica theory at the simulated points (``dp.theory_grid``): ``error[keep, f, alpha]``."""
    return dp.theory_grid([run["frac"] * a for a in run["alpha_tot"]], [run["frac"], 1.0], ("hard", "easy"))


def lab_claims(sims: dict[int, dict[str, np.ndarray]], theory: dict[str, np.ndarray], run: dict = LAB_RUN,
               name: str = "lab-08.2"):
    """The claims table of a lab-sized run, in the shape of notebook 01's controls: the easy-or-hard orderings of the
    simulations paired over seeds, and the simulations against the theory."""
    seeds = sorted(sims)
    small, large = 0, len(run["alpha_tot"]) - 1
    rows = {"hard": (0, 0), "easy": (1, 0), "random": (0, 1)}

    def at(i: int, keep: str) -> list[float]:
        return [float(sims[s]["error"].mean(-1)[rows[keep]][i]) for s in seeds]

    book = claims.Claims(name, cfg=config.Config(profile="lab", seed=seeds[0]))
    a_small, a_large = run["alpha_tot"][small], run["alpha_tot"][large]
    book.add("easy-small-hard-large-simulated",
             f"keep easy when data is scarce, hard when abundant (f = {run['frac']:g}; alpha_tot = {a_small:g}: "
             f"easy < random < hard; alpha_tot = {a_large:g}: hard below random and easy), paired over seeds",
             "ours: notebook 01's control at the lab's size", paper="—", kind="control",
             decision=claims.all_of(claims.paired(at(small, "easy"), at(small, "random"), side="<", digits=3),
                                    claims.paired(at(small, "random"), at(small, "hard"), side="<", digits=3),
                                    claims.paired(at(large, "hard"), at(large, "random"), side="<", digits=4),
                                    claims.paired(at(large, "hard"), at(large, "easy"), side="<", digits=4)),
             note=f"N = {run['dim']}, {run['trials']} trials per point, {len(seeds)} seeds")
    deviation = [float(np.median(np.abs(sims[s]["error"].mean(-1) - theory["error"]) / theory["error"]))
                 for s in seeds]
    book.add("sim-matches-theory", "the simulated test errors agree with the replica theory (median relative "
             "deviation per seed)", "ours: notebook 01's agreement at the lab's size", paper="—", kind="control",
             decision=claims.exceeds(deviation, threshold=run["sim_rel_error"], side="<", digits=3),
             note=f"threshold {run['sim_rel_error']:g}, as notebook 01's; at N = {run['dim']} finite-size "
                  "deviations are larger than at its N = 100")
    return book.table()


@exercise("08.2", "keep_fraction", points=3)
def _check_keep_fraction(student, g) -> int:
    """Goal: pruning by a score: exactly max(1, round(f·n)) examples, the highest scores (hard) or the lowest (easy),
    ties by position; and that this one function in the series' perceptron simulation gives the same claims table

    Hint: notebook 01, section 'The model' (keep hard / keep easy), and data_pruning's convention: a HIGH score is a
    HARD example. Keep k = max(1, round(f·n)) per row (Python's round, half to even; not int()), the k highest scores
    for 'hard' and the k lowest for 'easy', equal scores taken in order of position (a stable sort), and return the kept
    indices of each row in increasing order
    """
    cases = 40
    for _ in range(cases):
        score, frac, keep = _score_case(g)
        case = f"keep_fraction(score {course.brief(score)}, frac={frac}, keep={keep!r})"
        got = torch.as_tensor(_call(student, case, score, frac, keep))
        want = dp.keep_indices(score, frac, keep)
        k, size = want.shape[-1], score.shape[-1]
        assert got.shape[:-1] == want.shape[:-1] and got.ndim == want.ndim, (
            f"{case}: indices of shape {tuple(got.shape)}, not {tuple(want.shape)} (one row of kept indices per row "
            "of scores)")
        assert got.shape[-1] == k, (f"{case}: {got.shape[-1]} kept, but max(1, round({frac}·{size})) = {k} (the "
                                    f"series rounds {frac * size:g})")
        got = got.long()
        if not torch.equal(got, want):
            same_set = all(set(a.tolist()) == set(b.tolist()) for a, b in zip(got.reshape(-1, k), want.reshape(-1, k)))
            if same_set:
                raise AssertionError(f"{case}: the right examples in another order {got.tolist()}: return each row's "
                                     f"kept indices in increasing order, {want.tolist()}")
            other = dp.keep_indices(score, frac, "easy" if keep == "hard" else "hard")
            why = (" (these are the other rule's: a high score is a hard example)" if torch.equal(got, other)
                   else " (equal scores go by position: the lower index first)" if bool(
                       (score.gather(-1, got).sort(-1).values == score.gather(-1, want).sort(-1).values).all())
                   else "")
            raise AssertionError(f"{case}: kept {got.tolist()}, the series keeps {want.tolist()}{why}")
    # the integration: the series' simulation with the student's rule, against the reference's, same seeds
    first = course.randint(g, 0, 10_000)
    seeds = list(range(first, first + LAB_RUN["n_seeds"]))
    reference = lab_sims(None, LAB_RUN, seeds)
    mine = lab_sims(student, LAB_RUN, seeds)
    for s in seeds:
        for name in ("error", "margin"):
            if not np.array_equal(mine[s][name], reference[s][name]):
                raise AssertionError(
                    f"the perceptron simulation (N = {LAB_RUN['dim']}, seed {s}) with your rule: test {name}s "
                    f"{np.round(mine[s][name].mean(-1), 4).tolist()}, the reference run's "
                    f"{np.round(reference[s][name].mean(-1), 4).tolist()} (keep, f, alpha_prune)")
    theory = lab_theory(LAB_RUN)
    course.same_claims_table(lab_claims(mine, theory), lab_claims(reference, theory), "your keep rule")
    return cases + len(seeds)


# ---------------------------------------------------------------- 08.3 · the perceptron theory's test error


@exercise("08.3", "theory_error", points=3)
def _check_theory_error(student, g) -> int:
    """Goal: the replica theory of the pruned perceptron (perfect metric): the margin condition for u, the maximal
    margin over r, and the test error arccos(R)/π

    Hint: notebook 01, section 'The theory' (θ = 0): with dp.kept_margins(frac, keep) (nodes z = |margin| ≥ 0 of the
    kept examples, weights summing to 1), F(w) = (1 + w²)Φ(w) + wφ(w) (the SQUARED hinge averaged over t), u(r) solves
    α_prune·Σ weight·F(u − r z) = 1 (brentq: F increases), κ(r) = u(r)/√(1 + r²) is maximised over r > 0 (it is
    unimodal; search log r), R = r/√(1 + r²), error = arccos(R)/π. α_prune counts the KEPT examples per dimension (not
    α_tot)
    """
    n = 0
    fracs = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
    for i in range(8):
        alpha = round(math.exp(course.uniform(g, math.log(0.3), math.log(10.0))), 4)
        frac = fracs[course.randint(g, 0, len(fracs) - 1)]
        keep = ("hard", "easy")[i % 2]
        case = f"theory_error(alpha_prune={alpha}, frac={frac}, keep={keep!r})"
        got = course.call(student, case, alpha, frac, keep)
        n += 1
        assert isinstance(got, (float, int, np.floating)) or (torch.is_tensor(got) and got.numel() == 1), (
            f"{case}: return one number (the test error), not a {type(got).__name__}")
        got = float(got)
        want = dp.theory_perceptron(alpha, frac, keep).error
        if not (math.isfinite(got) and course.rel_error(got, want) < 1e-5):
            why = ""
            if frac < 1 and abs(got - dp.theory_perceptron(alpha, 1.0, "random").error) < 1e-4:
                why = " (this is the error without pruning: the kept margins' law is where f and keep enter)"
            elif frac < 1 and abs(got - dp.theory_perceptron(alpha / frac, frac, keep).error) < 1e-4:
                why = " (this is the error at alpha_tot = alpha_prune / f: alpha_prune already counts kept examples)"
            raise AssertionError(f"{case} = {got:.6f}, the series' theory gives {want:.6f} (relative error "
                                 f"{course.rel_error(got, want):.2g}){why}")
    return n


# ---------------------------------------------------------------- 08.4 · the self-supervised prototype score


def _embedding_case(g) -> tuple[torch.Tensor, int, int]:
    """An embedding with a few clusters of different sizes and radii, off the origin, and k and the k-means seed."""
    n, d, k = course.randint(g, 12, 60), course.randint(g, 2, 6), course.randint(g, 2, 5)
    centres = 3 * torch.randn(k, d, generator=g)
    which = torch.randint(0, k, (n,), generator=g)
    emb = centres[which] + course.uniform(g, 0.3, 1.5) * torch.randn(n, d, generator=g) + course.uniform(g, 0, 4)
    return emb, k, course.randint(g, 0, 1000)


@exercise("08.4", "prototype_score", points=2)
def _check_prototype_score(student, g) -> int:
    """Goal: the paper's self-supervised prototype metric: k-means on the normalised embedding, and each example's
    cosine distance to its nearest centroid (far = hard)

    Hint: notebook 04, section 'The metric' (and notebook 02, 'Four metrics'): L2-normalise every embedding row (in
    float64), cluster the normalised rows with dp.kmeans(z, k, seed), normalise the centroids too, then score = 1 −
    max_c cos(z, centroid_c) (a distance: high = hard) and cluster = that argmax
    """
    n = 0
    for _ in range(8):
        emb, k, seed = _embedding_case(g)
        case = f"prototype_score(embedding of shape {tuple(emb.shape)}, k={k}, seed={seed})"
        got = _call(student, case, emb, k, seed)
        n += 1
        assert isinstance(got, (tuple, list)) and len(got) == 2, f"{case}: return (distance, cluster)"
        dist, cluster = torch.as_tensor(got[0]).detach().double(), torch.as_tensor(got[1]).long()
        want_dist, want_cluster = dp.nearest_prototype(emb, k, seed)
        want_dist = want_dist.double()
        assert dist.shape == want_dist.shape and cluster.shape == want_cluster.shape, (
            f"{case}: distance of shape {tuple(dist.shape)} and cluster {tuple(cluster.shape)}, not one per example "
            f"({len(emb)})")
        if not _close(dist, want_dist, 1e-4, 1e-5):
            euclid = dp.nearest_prototype(emb, k, seed, cosine=False)[0].double()
            why = (" (the Euclidean distance in the raw embedding: the series uses the cosine distance on normalised "
                   "rows)" if _close(dist, euclid, 1e-4, 1e-5)
                   else " (a similarity, not a distance: far from every prototype must score high)"
                   if _close(dist, 1 - want_dist, 1e-4, 1e-5) else "")
            i = int((dist - want_dist).abs().argmax())
            raise AssertionError(f"{case}: example {i} scores {dist[i]:.6f}, the series {want_dist[i]:.6f}{why}")
        if not torch.equal(cluster, want_cluster):
            i = int((cluster != want_cluster).nonzero()[0])
            raise AssertionError(f"{case}: example {i} is put in cluster {int(cluster[i])}, the series' nearest "
                                 f"centroid is {int(want_cluster[i])}")
    return n


# ---------------------------------------------------------------- 08.5 · predict, then run


def pruning_experiment() -> dict[str, Any]:
    """The lab's "predict, then run" experiment: EL2N at its extremes, a keep count, the hard keep's threshold, and the
    replica theory at a few points. Deterministic; each entry is one prediction.

    Goal: the range of EL2N, how many examples a fraction keeps, the hard keep's margin threshold, and which keep rule
    the theory prefers with scarce and abundant data

    Hint: notebook 02 ('Four metrics': EL2N), notebook 01 ('The model', 'Easy or hard? It depends on how much data there
    is', and the learning curves of keeping the hardest below two examples per dimension) explain them
    """
    out: dict[str, Any] = {}
    wrong = torch.tensor([[0.0, 50.0, 0.0]])  # label 0, all the probability on class 1
    out["el2n_confidently_wrong"] = round(float(dp.el2n(wrong, torch.tensor([0]))[0]), 6)
    out["el2n_uniform_over_10_classes"] = round(float(dp.el2n(torch.zeros(1, 10), torch.tensor([3]))[0]), 6)
    out["kept_of_5_at_f_half"] = int(dp.keep_indices(torch.arange(5.0), 0.5, "hard").numel())
    out["hard_threshold_at_f_half"] = round(dp.keep_threshold(0.5, "hard"), 6)
    f, small, large = 0.5, 1.0, 32.0
    err = {(keep, a): dp.theory_perceptron(f * a, f, keep).error for keep in ("hard", "easy") for a in (small, large)}
    for a, name in ((small, "best_keep_at_alpha_tot_1"), (large, "best_keep_at_alpha_tot_32")):
        random = dp.theory_perceptron(f * a, 1.0, "random").error
        out[name] = min((err["hard", a], "hard"), (err["easy", a], "easy"), (random, "random"))[1]
    unpruned = dp.theory_perceptron(3.0, 1.0, "random").error
    out["random_keep_equals_unpruned_at_same_alpha_prune"] = bool(
        abs(dp.theory_perceptron(3.0, 0.3, "random").error - unpruned) < 1e-12)
    out["hard_f_0.2_beats_unpruned_at_alpha_prune_1"] = bool(
        dp.theory_perceptron(1.0, 0.2, "hard").error < dp.theory_perceptron(1.0, 1.0, "random").error)
    return out


def predictions_match(student: Any, measured: dict[str, Any]) -> bool:
    """Whether every prediction is the run's (what ``check("08.5", ...)`` asserts), as a boolean for the record."""
    try:
        course.compare_predictions(student, measured)
    except AssertionError:
        return False
    return True


course.predictions_exercise("08.5", pruning_experiment)
