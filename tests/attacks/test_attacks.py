"""Contract tests over every registered attack, and the torchattacks traps robaudit guards against."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import classes_subset
from robaudit.attacks import ATTACKS, build_attack, predict, resolve_attack, run_attack
from robaudit.attacks.methods.autoattack import plan_components
from robaudit.data import load_dataset
from robaudit.errors import ConfigError
from robaudit.models.classifiers import load_classifier
from robaudit.rng.sample_rng import ENGINES
from robaudit.rng.seeding import isolated_global_rng
from toys import streams

EPS, EPS_L2 = 8 / 255, 0.5
# Small budgets so the contract runs in seconds: each attack's own ``smoke`` parameters, from the registry, so a new
# attack is covered with no edit here.
FAST = {entry.name: dict(entry.meta["smoke"]) for entry in ATTACKS}


def _run(name, model, images, labels, *, seed=0, params=None, engine="generator"):
    resolved = resolve_attack(name, {**FAST.get(name, {}), **(params or {})}, eps=EPS, eps_l2=EPS_L2)
    attack = build_attack(resolved, model, num_classes=model.card.num_classes, seed=seed)
    rng = streams(len(labels), seed, engine)
    return resolved, run_attack(attack, resolved, images, labels, rng=rng, seed=seed)


@pytest.fixture(scope="module")
def model(digits_model_path):
    return load_classifier(digits_model_path)


@pytest.fixture(scope="module")
def batch(digits_test):
    return digits_test.images[:16], digits_test.labels[:16]


def _raw(name, model, images, labels, *, seed=0, engine="generator"):
    """The attack's own output, without run_attack's final projection."""
    resolved = resolve_attack(name, FAST.get(name, {}), eps=EPS, eps_l2=EPS_L2)
    attack = build_attack(resolved, model, num_classes=model.card.num_classes, seed=seed)
    with isolated_global_rng(seed):
        return resolved, attack(images, labels, streams(len(labels), seed, engine))


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_contract(name, engine, model, batch):
    images, labels = batch
    resolved, adversarial = _raw(name, model, images, labels, engine=engine)
    assert adversarial.shape == images.shape and adversarial.dtype == torch.float32
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    delta = (adversarial - images).flatten(1)
    if resolved.norm == "Linf":
        assert delta.abs().max() <= resolved.eps + 1e-6
    else:
        assert delta.norm(dim=1).max() <= resolved.eps + 1e-5
    moved = delta.abs().amax(dim=1) > 0
    assert moved.all(), f"{int((~moved).sum())} attacked samples came back as their clean image"
    _, again = _raw(name, model, images, labels, engine=engine)
    assert torch.equal(adversarial, again), "same seed must give the same adversarial examples"
    _, projected = _run(name, model, images, labels, engine=engine)
    assert torch.allclose(projected, adversarial, atol=1e-6), "run_attack's projection must not change a valid result"


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_leaves_global_rng_untouched(name, engine, model, batch):
    state = torch.random.get_rng_state()
    _run(name, model, *batch, engine=engine)
    assert torch.equal(state, torch.random.get_rng_state())


def test_pgd_lowers_accuracy(model, batch):
    images, labels = batch
    _, adversarial = _run("pgd", model, images, labels, params={"steps": 10})
    assert (predict(model, adversarial) == labels).float().mean() < (predict(model, images) == labels).float().mean()


def test_attack_runs_model_in_eval_mode(model, batch):
    model.train()
    resolved = resolve_attack("fgsm", {}, eps=EPS, eps_l2=EPS_L2)
    build_attack(resolved, model, num_classes=10, seed=0)
    assert not any(m.training for m in model.modules())


def test_normalization_is_applied_once(model, batch):
    images, labels = batch
    # FGSM's step follows the gradient through robaudit's own normalizing wrapper, computed here by hand.
    x = images.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(x), labels, reduction="sum").backward()
    expected = (images + EPS * x.grad.sign()).clamp(0, 1)
    _, adversarial = _raw("fgsm", model, images, labels)
    assert torch.allclose(adversarial, expected, atol=1e-6)
    # torchattacks (FAB, Square inside AutoAttack) sees the same logits: no second normalization.
    resolved = resolve_attack("autoattack", FAST["autoattack"], eps=EPS, eps_l2=EPS_L2)
    autoattack = build_attack(resolved, model, num_classes=10, seed=0)
    library = [stage.attack for _, stage in autoattack.stages if hasattr(stage.attack, "get_logits")]
    assert library, "FAB-T and Square come from torchattacks"
    for component in library:
        assert torch.equal(component.get_logits(images), model(images))


@pytest.mark.parametrize(
    "classes, expected",
    [
        (2, ["apgd-ce", "fab-t", "square"]),
        (3, ["apgd-ce", "fab-t", "square"]),
        (4, ["apgd-ce", "apgd-t", "fab-t", "square"]),
        (10, ["apgd-ce", "apgd-t", "fab-t", "square"]),
    ],
)
def test_autoattack_plan_depends_on_class_count(classes, expected):
    kept, dropped = plan_components(version="standard", num_classes=classes)
    assert kept == expected
    assert ("apgd-t" in " ".join(dropped)) == (classes < 4)


def test_autoattack_rand_drops_dlr_for_binary():
    kept, dropped = plan_components(version="rand", num_classes=2)
    assert kept == ["apgd-ce"] and "apgd-dlr" in dropped[0]


@pytest.mark.parametrize("fixture", ["binary_model_path", "ternary_model_path"])
def test_autoattack_on_few_classes_runs_and_lowers_accuracy(fixture, request):
    model = load_classifier(request.getfixturevalue(fixture))
    classes = model.card.num_classes
    data = classes_subset(load_dataset("digits", split="test"), classes)
    images, labels = data.images[:40], data.labels[:40]
    clean = (predict(model, images) == labels).float().mean()
    for eps in (16 / 255, 64 / 255):
        resolved = resolve_attack("autoattack", {"steps": 10, "n_queries": 100, "eps": eps}, eps=EPS, eps_l2=EPS_L2)
        attack = build_attack(resolved, model, num_classes=classes, seed=0)
        adversarial = run_attack(attack, resolved, images, labels, rng=streams(len(labels), 0), seed=0)
        assert "apgd-t" not in attack.details["components"]
        robust = (predict(model, adversarial) == labels).float().mean()
        assert robust <= clean
    assert robust < clean


class _Linear(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, classes)
        self.card = type("Card", (), {"num_classes": classes})()

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("classes, targets", [(100, 9), (10, 9), (5, 4), (2, 1)])
def test_autoattack_target_count_and_explicit_seed(classes, targets):
    model = _Linear(classes)
    resolved = resolve_attack("autoattack", {}, eps=EPS, eps_l2=EPS_L2)
    attack = build_attack(resolved, model, num_classes=classes, seed=1234)
    components = {name.split("/")[0]: stage.attack for name, stage in attack.stages}
    # torchattacks reads n_classes as "n_classes - 1 targets": robaudit must end up with min(9, C - 1) targets.
    assert components["fab-t"].n_target_classes == targets
    assert sum(name.startswith("fab-t/") for name, _ in attack.stages) == targets
    if "apgd-t" in components:  # robaudit's own APGD-T: one run per target rank 2 .. targets + 1
        ranks = [stage.attack.target_rank for name, stage in attack.stages if name.startswith("apgd-t/")]
        assert ranks == list(range(2, targets + 2))
    assert components["apgd-ce"].steps == 100  # not torchattacks' AutoAttack wrapper's 10
    library = [c for c in components.values() if hasattr(c, "seed")]
    assert library and all(component.seed == 1234 for component in library)  # never the clock


def test_unknown_attack_and_key_are_named():
    """Checked where a config is parsed (``components.hyperparameters``, from the catalog)."""
    from robaudit.components.hyperparameters import check_component
    from robaudit.config import ComponentSpec

    with pytest.raises(ConfigError, match="did you mean 'pgd'"):
        resolve_attack("pdg", {}, eps=EPS, eps_l2=EPS_L2)
    with pytest.raises(ConfigError, match="unknown key 'stepz'.*did you mean 'steps'"):
        check_component(ComponentSpec("pgd", {"stepz": 3}), kind="attack")
    with pytest.raises(ConfigError, match="attack 'pgd': steps must be an integer"):
        check_component(ComponentSpec("pgd", {"steps": 2.5}), kind="attack")
    check_component(ComponentSpec("pgd", {"steps": 3, "eps": "4/255", "alpha": None, "label": "a"}), kind="attack")


def test_eps_defaults_follow_the_norm():
    assert resolve_attack("pgd", {}, eps=EPS, eps_l2=EPS_L2).eps == EPS
    assert resolve_attack("cw", {}, eps=EPS, eps_l2=EPS_L2).eps == EPS_L2
    assert resolve_attack("square", {"norm": "L2"}, eps=EPS, eps_l2=EPS_L2).eps == EPS_L2
    assert resolve_attack("pgd", {"eps": "4/255"}, eps=EPS, eps_l2=EPS_L2).eps == pytest.approx(4 / 255)
