"""Search specs: validation, conditional λ, grid points, error messages."""

import math
from pathlib import Path

import optuna
import pytest

from mg_tune.search.sampling import build_sampler, DefineByRun, trial_params, warm_start_points
from mg_tune.search.spec import PAPER_LAMBDA_GRID, SearchSpec, SpecError, default_lambda_range, load_spec

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


@pytest.mark.parametrize("path", sorted(SPACES.rglob("*.yaml")), ids=lambda p: str(p.relative_to(SPACES)))
def test_shipped_specs_validate(path):
    spec, text = load_spec(path)
    assert spec.name and text.startswith("#")
    spec.train_config(spec.first_point())


def test_default_lambda_range_is_a_decade_around_the_paper_grid():
    low, high = default_lambda_range("energy")  # grid 5e-4 .. 5e-3
    assert low == pytest.approx(5e-4 / math.sqrt(10)) and high == pytest.approx(5e-3 * math.sqrt(10))
    assert high / low == pytest.approx(100.0)


def test_lambda_range_is_conditional_on_the_sampled_loss():
    spec = SearchSpec.model_validate(
        {"space": {"loss": {"choice": ["energy", "rrr"]}, "lam": {"loguniform_by_loss": {"energy": [0.1, 1.0]}}}}
    )
    study = optuna.create_study(directions=["maximize"] * 3, sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {"energy": [], "rrr": []}
    define = DefineByRun(spec)
    for _ in range(40):
        trial = study.ask()
        define(trial)
        params = trial_params(trial.params)
        seen[params["loss"]].append(params["lam"])
        study.tell(trial, [0.0, 0.0, 0.0])
    assert all(0.1 <= v <= 1.0 for v in seen["energy"]) and seen["energy"]
    low, high = default_lambda_range("rrr")
    assert all(low <= v <= high for v in seen["rrr"]) and seen["rrr"]


def test_grid_sampler_enumerates_the_papers_lambda_grid():
    spec = SearchSpec.model_validate(
        {"sampler": "grid", "space": {"loss": {"choice": ["l1", "energy"]}, "layer": {"choice": ["input", "final"]}, "lam": {"loguniform_by_loss": {}}}}
    )
    points = spec.grid_points()
    assert len(points) == 2 * 2 * 3
    assert sorted(p["lam"] for p in points if p["loss"] == "energy" and p["layer"] == "input") == sorted(PAPER_LAMBDA_GRID["energy"])
    enqueued = warm_start_points(spec)
    assert {"loss": "l1", "layer": "input", "lam_l1": 1e-3} in enqueued


@pytest.mark.parametrize("sampler,cls", [("nsga2", optuna.samplers.NSGAIISampler), ("nsga3", optuna.samplers.NSGAIIISampler), ("tpe", optuna.samplers.TPESampler), ("gp", optuna.samplers.GPSampler), ("random", optuna.samplers.RandomSampler)])
def test_sampler_names_build_optuna_samplers(sampler, cls):
    assert isinstance(build_sampler(SearchSpec(sampler=sampler)), cls)


@pytest.mark.parametrize("trials,startup", [(1, 2), (8, 2), (12, 3), (40, 10), (400, 10)])
def test_gp_starts_with_min_10_max_2_a_quarter_of_the_trials_at_random(trials, startup):
    sampler = build_sampler(SearchSpec(sampler="gp", trials=trials, seed=5))
    assert sampler._n_startup_trials == startup  # min(10, max(2, trials // 4))


def test_warm_start_names_the_paper_grid_or_an_earlier_search():
    assert SearchSpec().warm_start_search is None
    assert SearchSpec(warm_start="paper_grid").warm_start_search is None
    assert SearchSpec(warm_start="voc-first").warm_start_search == "voc-first"
    assert warm_start_points(SearchSpec(sampler="tpe", warm_start="voc-first", space={"loss": {"choice": ["energy"]}})) == []


def test_budget_takes_trial_epochs_time_or_both():
    assert SearchSpec().budget is None
    assert SearchSpec.model_validate({"budget": {"trial_epochs": 12}}).budget.trial_epochs == 12
    both = SearchSpec.model_validate({"budget": {"trial_epochs": 12, "time_s": 3600}}).budget
    assert (both.trial_epochs, both.time_s, str(both)) == (12, 3600.0, "trial_epochs=12, time_s=3600")

SMERF = "simple_fr, simple_nr, complex_fr, complex_cr1, complex_cr2, complex_cr3, complex_cr4"  # the settings PAFL/SAFL exist on


@pytest.mark.parametrize(
    "body,message",
    [
        ("trials: 3\nsampler: nsga9\n", "sampler: Input should be 'nsga2'"),
        ("trails: 3\n", "trails: unknown key; did you mean 'trials'?"),
        ("space: {lr: {loguniform: [0, 1.0]}}\n", "space.lr: loguniform needs positive bounds"),
        ("space: {lr: {loguniform: [1.0, 0.1]}}\n", "space.lr: loguniform needs low < high"),
        ("objectives: [f1, accuracy_top5]\n", "objective 'accuracy_top5' is not a metric"),
        ("constraints: ['f1 >= 0.8', 'f1 <= 0.5']\n", "constraints on f1 contradict each other"),
        ("fixed: {loss: enrgy}\n", "loss='enrgy' is not one of"),
        ("trials: many\n", "trials: Input should be a valid integer"),
        ("space: {lam: {loguniform: [0.1, 1.0]}}\n", "space.lam must be loguniform_by_loss"),
        ("data: {variant: multilabel\n", "malformed YAML"),
        # scheduler and warm start (issue 8)
        ("fixed: {epochs: 3}\nscheduler: asha\n", "scheduler.name: Input should be 'mo_asha'"),
        ("fixed: {epochs: 3}\nscheduler: {name: mo_asha, grace_period: 3}\n", "scheduler.grace_period must be below max_t=3 epochs (got 3)"),
        ("fixed: {epochs: 3}\nscheduler: {name: mo_asha, max_t: 5}\n", "scheduler.max_t must be at most fixed.epochs=3 (got 5)"),
        ("scheduler: {name: mo_asha, reduction_factor: 1}\n", "scheduler.reduction_factor: Input should be greater than 1"),
        ("scheduler: {name: mo_asha, grace: 1}\n", "scheduler.grace: unknown key"),
        ("warm_start: paper_grid\nspace: {lr: {loguniform: [1.0e-4, 1.0e-2]}}\n", "warm_start: paper_grid: the paper grid needs a choice list for every searched hyperparameter but lam; space.lr is loguniform"),
        ("warm_start: paper_grid\ntrials: 4\nspace: {loss: {choice: [energy, l1]}, lam: {loguniform_by_loss: {}}}\n", "warm_start: paper_grid enqueues 6 grid points, more than trials=4"),
        ("warm_start: paper_grid\nspace: {lam: {loguniform_by_loss: {energy: [0.01, 1.0]}}}\n", "warm_start: paper_grid: λ=0.0005 of loss energy lies outside space.lam's range [0.01, 1]"),
        ("warm_start: ''\n", "warm_start: give none, paper_grid or the name of an earlier search (got '')"),
        ("sampler: grid\nwarm_start: voc-first\nspace: {loss: {choice: [energy, l1]}}\n", "warm_start: voc-first: a grid search runs exactly its grid; warm-start another sampler"),
        # budget (issue 21)
        ("budget: {}\n", "budget: give trial_epochs, time_s or both"),
        ("budget: {trial_epochs: 0}\n", "budget.trial_epochs: Input should be greater than 0 (got 0)"),
        ("budget: {time_s: -5}\n", "budget.time_s: Input should be greater than 0 (got -5)"),
        ("budget: {max_trial_epochs: 4}\n", "budget.max_trial_epochs: unknown key; did you mean 'trial_epochs'?"),
        # metrics the data set cannot measure (issue 20)
        (
            "data: {name: voc, root: voc}\nobjectives: [f1, pafl]\n",
            "objectives.1.name: 'pafl' is not measured on this data set: SMERF's attribution focus levels need its objects to focus on and avoid, "
            f"which only the SMERF TextBox settings have ({SMERF}), not data.name 'voc'",
        ),
        ("data: {name: coco, root: coco}\nobjectives: [{name: safl, direction: min}]\n", "objectives.0.name: 'safl' is not measured on this data set"),
        ("data: {variant: multilabel}\nobjectives: [f1, epg, pafl]\n", f"objectives.2.name: 'pafl' is not measured on this data set: SMERF's attribution focus levels need its objects to focus on and avoid, which only the SMERF TextBox settings have ({SMERF}), not data.variant 'multilabel'"),
        (
            "data: {name: waterbirds, root: wb}\nobjectives: [accuracy]\nconstraints: ['accuracy >= 0.5', 'x_seg_epg >= 0.2']\n",
            "constraints.1 'x_seg_epg >= 0.2': 'x_seg_epg' is not measured on this data set: Waterbirds has no segmentation masks",
        ),
        ("data: {variant: multilabel}\nobjectives: [accuracy]\n", "objectives.0.name: 'accuracy' is not measured on this data set: accuracy is reported for single-label data, and data.variant 'multilabel' is multi-label (f1 and map are)"),
        ("data: {variant: simple_fr}\nobjectives: [accuracy, worst_group_acc]\n", "objectives.1.name: 'worst_group_acc' is not measured on this data set: data.variant 'simple_fr' has no groups"),
    ],
)
def test_bad_specs_give_one_line_naming_file_and_field(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_metrics_a_data_set_supports_are_accepted(tmp_path):
    """SMERF metrics on a SMERF setting, segmentation metrics on VOC (files checked later) and COCO, group accuracies with groups."""
    for body in (
        "data: {variant: simple_fr}\nobjectives: [accuracy, pafl, {name: safl, direction: min}]\n",
        "data: {name: voc, root: voc}\nobjectives: [f1, seg_epg]\nconstraints: ['x_seg_epg >= 0.1']\n",
        "data: {name: coco, root: coco}\nobjectives: [f1, x_seg_epg]\n",
        "data: {name: waterbirds, root: wb}\nobjectives: [accuracy, worst_group_acc, mean_group_acc]\n",
        "data: {variant: spurious}\nobjectives: [accuracy, worst_group_acc]\n",
    ):
        (tmp_path / "ok.yaml").write_text(body)
        load_spec(tmp_path / "ok.yaml")


def test_crayon_pruning_hyperparameters_are_searchable():
    spec = SearchSpec.model_validate(
        {
            "fixed": {"init_checkpoint": "original.pt", "loss": "crayon_attention", "epochs": 4},
            "space": {"prune_fraction": {"uniform": [0.05, 0.5]}, "prune_finetune_epochs": {"int": [0, 4]}, "lam": {"loguniform_by_loss": {"crayon_attention": [0.1, 10.0]}}},
        }
    )
    config = spec.train_config({"prune_fraction": 0.3, "prune_finetune_epochs": 4, "lam": 1.0})
    assert (config.prune_fraction, config.prune_finetune_epochs, config.loss) == (0.3, 4, "crayon_attention")
    with pytest.raises(ValueError, match="prune_finetune_epochs=5 exceeds epochs=4"):
        spec.train_config({"prune_fraction": 0.3, "prune_finetune_epochs": 5, "lam": 1.0})


def test_protocol_specs_pair_conventional_with_reversed():
    for stem in ("waterbirds_protocol", "textbox_waterbirds_protocol"):
        conventional, _ = load_spec(SPACES / f"{stem}.yaml")
        reversed_, _ = load_spec(SPACES / f"{stem}_reversed.yaml")
        assert conventional.metric_names == reversed_.metric_names == ["worst_group_acc", "accuracy"]
        assert conventional.space["annotation_fraction"].choice == [0.0, 0.01]
        assert conventional.data.options.get("reversed", False) is False
        assert reversed_.data.variant == "reversed" or reversed_.data.options["reversed"] is True
