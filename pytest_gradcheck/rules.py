"""Every rule that can change a verdict, in one place.

Each `Rule` says when it fires, what evidence it needs, what it costs in evaluations, whether it
can turn a failure into a pass, which function implements it (`unit`, whose docstring says the
same at the code), and which tests prove that a real error still fails through it (each fails
if the rule is made to pass what it should not). `docs/verdicts.md` holds `markdown_table()`;
a test compares them. A row of the report names the rule that decided it (`decided by`) where
a user would ask why it passed or failed.

A leaf module: it imports nothing from the package, so the modes can name their rules.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    name: str  # as rows show it (`Entry.decided_by`)
    fires: str  # when it acts
    evidence: str  # what it needs to act
    cost: str  # in evaluations of the objective (one forward each)
    can_pass: str  # "no", or "yes: ..." with the bound that keeps a real error failing
    unit: str  # the function (or class) that implements it, module.qualname in the package
    tests: tuple[str, ...]  # node ids of tests that fail if the rule lets a real error pass


ELEMENTS = Rule(
    "elements",
    "every element in full mode, the sampled ones in sample mode; in auto mode, every element "
    "of a check of up to 64 elements in all (and of the arrays it settles)",
    "a central difference per element against backward's value, within rtol, or within atol "
    "plus the objective's rounding floor over the step",
    "2 per element",
    "yes: an element within rtol, or within the rounding floor (a bound on float64 noise)",
    "numeric.compare",
    ("tests/test_numerics.py::"
     "test_single_element_off_by_a_tenth_of_a_percent_is_caught_at_its_index",
     "tests/test_numeric_core.py::test_smooth_function_right_value_passes_wrong_value_fails",)
)
KINKS = Rule(
    "kinks",
    "an element fails rtol but its one-sided slopes differ by more than the tolerance",
    "backward's value lies between the element's two one-sided slopes (a ReLU at 0, a max-pool "
    "tie): the same evaluations as its central difference",
    "none",
    "yes: only a value between the one-sided slopes; the kinks column counts such elements",
    "numeric.compare",
    ("tests/test_numerics.py::test_relu_wrong_value_at_zero_fails",
     "tests/test_numerics.py::test_abs_kink_with_wrong_sign_fails",
     "tests/test_hostile_numerics.py::"
     "test_a_small_weight_error_behind_a_relu_at_zero_fails_for_every_seed",)
)
DIRECTION = Rule(
    "direction",
    "fast mode, and auto mode on checks of more than 64 elements in all",
    "the derivative along a seeded random direction against backward's projection, within "
    "DIRECTIONAL_SAFETY times its estimated numerical error (Richardson extrapolation over "
    "steps h and 2h when truncation shows)",
    "2 per direction, 2 more when step h disagrees",
    "yes: a mismatch within the estimated error; one wrong element is judged by its share",
    "numeric.Directional.within",
    ("tests/test_fast_sensitivity.py::"
     "test_one_element_off_by_a_tenth_of_a_percent_in_a_million_is_caught",
     "tests/test_fast_joint.py::test_two_wrong_arrays_are_both_failed",
     "tests/test_fast_sensitivity.py::"
     "test_an_element_the_floor_excuses_but_the_direction_resolves_is_not_explained_away",)
)
NARROW_PASS = Rule(
    "narrow pass",
    "a direction (joint or an array's own) passes with a mismatch above DIRECTIONAL_CONFIRM "
    "times its estimate",
    "the mismatch against the estimate",
    "2 (one more direction)",
    "no",
    "numeric.Directional.doubtful",
    ("tests/test_fast_sensitivity.py::"
     "test_errors_spread_over_a_row_that_nearly_cancel_along_one_direction_are_confirmed_away",)
)
JOINT = Rule(
    "joint direction",
    "fast mode with more than one array: every array moves along its own direction at once",
    "the joint derivative within its estimated error, along every planned direction",
    "2 per direction for all arrays together",
    "yes: only when every joint direction agrees; a disagreement is followed array by array "
    "along at least as many directions",
    "directional.fast_together",
    ("tests/test_fast_joint.py::test_two_wrong_arrays_are_both_failed",
     "tests/test_fast_joint.py::"
     "test_one_element_off_by_a_tenth_of_a_percent_in_any_array_is_located_in_its_row",
     "tests/test_fast_sensitivity.py::"
     "test_errors_spread_over_a_row_that_nearly_cancel_along_one_direction_are_confirmed_away",)
)
SMALLER_STEP = Rule(
    "smaller step",
    "a direction passes, but what extrapolation leaves of the truncation is wider than rtol",
    "the same direction at step h/16",
    "2",
    "no: a difference that does not settle there is unresolved",
    "directional._at_smaller_step",
    ("tests/test_fast_sensitivity.py::"
     "test_a_step_whose_truncation_hides_rtol_never_passes_a_wrong_element",
     "tests/test_verdict_mutants.py::"
     "test_the_joint_direction_confirms_a_truncated_pass_at_a_smaller_step",)
)
SEARCH = Rule(
    "search",
    "a direction disagrees",
    "group testing halves the direction's support to the element behind the mismatch, which "
    "is judged as full mode judges it; one that passes on its own (a kink) is left out and "
    "the direction measured again; one that passes only through the rounding floor (beyond "
    "rtol) while its share of the mismatch is beyond the direction's allowance is wrong",
    "2*ceil(log2 n) + 2 per element found, at most MAX_LOCATED wrong and MAX_EXPLAINED (or "
    "an eighth of full mode) passing",
    "yes: only when the elements found to pass on their own account for the whole mismatch",
    "search.Search.explain",
    ("tests/test_modes.py::test_fast_mode_locates_one_wrong_element_among_16384_like_full_mode",
     "tests/test_fast_joint.py::test_two_wrong_arrays_are_both_failed",
     "tests/test_fast_sensitivity.py::"
     "test_an_element_the_floor_excuses_but_the_direction_resolves_is_not_explained_away",)
)
SETTLED = Rule(
    "settled",
    "auto mode: an array of up to auto_limit elements whose own random direction disagrees",
    "every element judged as full mode judges it (the elements and kinks rules): the exact "
    "failure map, whatever the direction's step crossed",
    "2 per element of that array",
    "yes: only as the elements and kinks rules would",
    "directional.fast",
    ("tests/test_modes.py::test_auto_mode_maps_a_wrong_array_element_by_element",)
)
KINK_IN_REACH = Rule(
    "kink in reach",
    "a disagreement no element explains, with no wrong element found",
    "each half of the direction measured on its own agrees, or each half that does not is split "
    "again down to single elements, none of them wrong (a kink only the combined step of many "
    "elements crossed; a wrong element's share stays in whichever part holds it)",
    "4 per part measured; at most MAX_LOCATED parts per level",
    "yes: only when no part of the direction disagrees",
    "search.kink_in_reach",
    ("tests/test_fast_sensitivity.py::"
     "test_a_spread_mismatch_no_element_explains_fails_above_the_element_by_element_limit",
     "tests/test_fast_sensitivity.py::"
     "test_a_wrong_element_beside_a_kink_only_the_whole_step_reaches_still_fails",)
)
FALLBACK = Rule(
    "fallback",
    "a disagreement neither wrong elements nor kinks explain",
    "arrays up to FALLBACK_LIMIT elements are judged element by element (the elements rule); "
    "larger ones fail without an index",
    "2 per element, up to FALLBACK_LIMIT elements",
    "yes: full mode's verdict, as the elements rule gives it",
    "directional.fast",
    ("tests/test_fast_sensitivity.py::"
     "test_a_spread_mismatch_no_element_explains_fails_above_the_element_by_element_limit",)
)
UNRESOLVED = Rule(
    "unresolved",
    "truncation stands above the noise and is over UNRESOLVED_TRUNCATION of the derivative",
    "the steps h and 2h disagree that much",
    "none beyond the direction's",
    "no: the array fails with advice (a smaller eps, or rescaled inputs)",
    "numeric.richardson",
    ("tests/test_verdict_mutants.py::"
     "test_a_step_that_cannot_resolve_the_gradient_never_passes_a_loose_rtol",)
)
MEASURED_ROUNDING = Rule(
    "measured rounding",
    "a float64 check in full, sample or auto mode, with no eps or rtol given",
    "the objective's rounding noise measured from fourth differences of evaluations at "
    "moves of 1e-6 of each element (24 with one element of each array moving, for the element "
    "floor; 16 with every element moving, for the directional allowance): below the bound "
    "epsilon times the sum of "
    "the objective's |terms| it replaces the bound; above it (a loss whose internal terms "
    "dwarf its value) only when moves 100 times smaller read the same",
    "ELEMENT_NOISE_EVALUATIONS (24) in full and sample mode; JOINT_NOISE_EVALUATIONS (16) in "
    "auto mode, 24 more when it judges elements; as many again above the bound",
    "yes, above the bound only: within the rounding measured at two move sizes",
    "judging.Judge.measured_rounding",
    ("tests/test_measured_rounding.py::"
     "test_a_small_gradient_element_off_by_a_tenth_of_a_percent_fails_under_measured_rounding",
     "tests/test_measured_rounding.py::"
     "test_a_wrong_element_beyond_the_measured_rounding_of_a_cancelling_loss_still_fails",)
)
MEASURED_NOISE = Rule(
    "measured noise",
    "the layer computes in float32 or float16 (its output or a parameter it keeps), and no "
    "eps or rtol was given",
    "the objective's noise measured when each array moves, the same at two step sizes",
    "NOISE_PROBE_EVALUATIONS per array",
    "no: the measured noise only replaces the precision's bound where it is lower",
    "judging.Judge.measured_low_precision",
    ("tests/test_hostile_numerics.py::"
     "test_a_layer_computing_in_float32_is_judged_within_its_measured_noise",
     "tests/test_numerics.py::test_layer_computing_in_float32_still_catches_large_errors",)
)
HIDDEN_PRECISION = Rule(
    "hidden precision",
    "a float64 array fails and no eps or rtol was given",
    "the objective's noise measured when the array moves is rounding (the same at two step "
    "sizes; measured again with moves of float16's resolution, then ten times that, where "
    "finer moves were rounded away or read float16), only a lower precision explains it, and "
    "it explains the array's mismatch",
    "NOISE_PROBE_EVALUATIONS per failing array (up to three times in float16), then its mode "
    "again",
    "yes: only within the measured noise of that precision",
    "judging.Judge.rejudge_hidden_precision",
    ("tests/test_numerics.py::test_a_wrong_float64_relu_network_is_not_mistaken_for_low_precision",
     "tests/test_hostile_numerics.py::"
     "test_a_parameter_cast_to_float32_still_fails_a_large_error_there",
     "tests/test_verdict_mutants.py::"
     "test_hidden_precision_re_judges_only_what_the_measured_noise_explains",
     "tests/test_low_precision_casts.py::test_a_wrong_float16_layer_still_fails_in_float16",
     "tests/test_hostile_numerics.py::"
     "test_a_small_weight_error_behind_a_relu_at_zero_fails_for_every_seed",
     "tests/test_low_precision_casts.py::test_a_wrong_gradient_of_a_re_cast_parameter_still_fails",
     "tests/test_example_nn_models.py::"
     "test_a_missing_l2_term_is_not_taken_for_hidden_float16",)
)
DECOY = Rule(
    "decoy",
    "every check, before the baseline",
    "a forward on the inputs' samples shifted by one place and scaled (in their own order, "
    "then scaled by 0.1%, where the shifted inputs are refused) from scrambled random "
    "streams: a backward that uses an earlier call's mask or cache disagrees",
    "1 to 3 forwards",
    "no",
    "decoy.decoy_forward",
    ("tests/test_hostile_checker.py::test_a_backward_using_the_previous_calls_relu_mask_fails",
     "tests/test_hostile_checker.py::test_a_backward_using_the_previous_calls_input_fails",
     "tests/test_hostile_checker.py::"
     "test_a_stale_cache_is_caught_where_the_inputs_order_or_domain_is_narrow",)
)
REPEATS = Rule(
    "repeats",
    "every run of the mode; before any verdict with kinks or failures",
    "the 1st, 2nd, 4th, ... evaluation made twice, and the unperturbed point CONFIRMATIONS "
    "times, each bit for bit",
    "log2 of the evaluations, and CONFIRMATIONS",
    "no: a difference is an error (nondeterminism), never a verdict",
    "judging.Judge.confirmed_verdicts",
    ("tests/test_hostile_checker.py::"
     "test_a_generator_created_inside_forward_on_a_tiny_input_is_caught",
     "tests/test_hostile_checker.py::test_rare_tiny_noise_never_passes_through_the_kink_rule",)
)
UNRESET_STREAMS = Rule(
    "unreset streams",
    "a random stream no setup forward drew from changed during the evaluations",
    "the streams' states after the run",
    "the mode once more",
    "no: every verdict is given again with every stream reset before every evaluation",
    "judging.Judge.recheck_unreset_streams",
    ("tests/test_hostile_checker.py::"
     "test_a_wrong_gradient_still_fails_when_judged_again_with_every_stream_reset",)
)

RULES: tuple[Rule, ...] = (
    ELEMENTS, KINKS, DIRECTION, NARROW_PASS, JOINT, SMALLER_STEP, SEARCH, SETTLED, KINK_IN_REACH,
    FALLBACK, UNRESOLVED, MEASURED_ROUNDING, MEASURED_NOISE, HIDDEN_PRECISION, DECOY, REPEATS,
    UNRESET_STREAMS,
)


def markdown_table() -> str:
    """The table of `docs/verdicts.md`."""
    head = ("| rule | fires when | evidence | cost (evaluations) | can pass a failure | "
            "where | tests |")
    lines = [head, "|" + " --- |" * 7]
    for r in RULES:
        tests = "<br>".join(f"`{t}`" for t in r.tests)
        lines.append(f"| **{r.name}** | {r.fires} | {r.evidence} | {r.cost} | {r.can_pass} | "
                     f"`{r.unit}` | {tests} |")
    return "\n".join(lines) + "\n"
