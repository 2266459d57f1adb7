"""The search spec (YAML, paths relative to it, errors naming the field) and the swarm (Dirichlet
around the prior, deterministic, within bounds and epoch caps)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mixforge.config_errors import ConfigError
from mixforge.optimize.search import load_search_spec
from mixforge.optimize.swarm import epoch_caps, make_space, project, sample_weights

MIXTURE = {
    "name": "base",
    "pool": ["pool/"],
    "store": "store",
    "budget_tokens": 1000,
    "groups": [
        {"name": "web", "where": {"source": "web"}, "weight": 1},
        {"name": "code", "where": {"source": "code"}, "weight": 1},
        {"name": "books", "where": {"source": "books"}, "weight": 1},
    ],
}


def write_search(tmp_path, **changes) -> str:
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(MIXTURE))
    search = {
        "name": "find-mix",
        "mixture": "mix.yaml",
        "bounds": {"web": {"min": 0.1, "max": 0.8}},
        "budget_tokens": 5000,
        "swarm": {"size": 8},
        "targets": [{"name": "held-out", "uri": "targets/held-out/", "weight": 2}],
        "proxy": {"hidden_size": 32, "layers": 2, "heads": 2},
        **changes,
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(search))
    return str(path)


def test_search_spec_loads_with_paths_relative_to_its_folder(tmp_path):
    spec = load_search_spec(write_search(tmp_path))
    assert spec.mixture_spec().name == "base"
    assert spec.mixture_spec().store == str(tmp_path / "store")
    assert spec.targets[0].uri == str(tmp_path / "targets/held-out")
    assert spec.group_names() == ["web", "code", "books"]
    assert spec.budget() == 5000 and spec.epoch_cap == 4.0 and spec.swarm.size == 8
    assert spec.target_weights() == {"held-out": 2.0}
    # The natural token shares are the prior unless the spec gives one; caps at 4 epochs of 5000 tokens.
    space = spec.space({"web": 3000, "code": 1000, "books": 250})
    assert space.groups == ("web", "code", "books")
    np.testing.assert_allclose(space.prior, [3000 / 4250, 1000 / 4250, 250 / 4250])
    np.testing.assert_allclose(space.lower, [0.1, 0, 0])
    np.testing.assert_allclose(space.upper, [0.8, 0.8, 0.2])

    inline = load_search_spec(write_search(tmp_path, mixture=MIXTURE, groups=["web", "code"], budget_tokens=None))
    assert inline.mixture_spec().pool == [str(tmp_path / "pool")]
    assert inline.group_names() == ["web", "code"] and inline.budget() == 1000


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"groups": ["web", "video"]}, "groups: ['video'] are not groups of mixture 'base'"),
        ({"bounds": {"video": {"max": 0.5}}}, "bounds: ['video']"),
        ({"bounds": {"web": {"min": 0.9, "max": 0.1}}}, "bounds.web"),
        ({"prior": {"web": 1.0}}, "prior: give a share for every searched group"),
        ({"targets": []}, "targets"),
        ({"targets": [{"name": "Bad Name", "uri": "x"}]}, "targets.0.name"),
        ({"swarm": {"size": 1}}, "swarm.size"),
        ({"proxy": {"hidden_size": 30, "heads": 4}}, "heads (4) must divide hidden_size (30)"),
        ({"fit": {"regressors": ["forest"]}}, "fit.regressors.0"),
        ({"epoch_cap": 0}, "epoch_cap"),
        ({"mixture": "missing.yaml"}, "mixture: "),
        ({"surprise": 1}, "surprise: unknown key"),
        (
            {"mixture": {**MIXTURE, "groups": [{"name": "Web"}]}},
            "mixture.spec.groups.0.name: Value error, invalid group",
        ),
        ({"targets": [{"name": "a", "uri": "x"}, {"name": "a", "uri": "y"}]}, "targets: Value error, names must be"),
    ],
)
def test_search_spec_errors_name_the_field(tmp_path, changes, names):
    with pytest.raises(ConfigError) as e:
        load_search_spec(write_search(tmp_path, **changes))
    assert names in str(e.value)


def test_budget_required_when_the_mixture_has_none(tmp_path):
    with pytest.raises(ConfigError, match="budget_tokens: give one"):
        load_search_spec(
            write_search(
                tmp_path, mixture={**MIXTURE, "budget_tokens": None, "budget_fraction": 0.5}, budget_tokens=None
            )
        )


def test_swarm_is_deterministic_and_within_bounds_and_epoch_caps():
    prior = {"web": 0.7, "code": 0.2, "books": 0.1}
    caps = epoch_caps({"web": 10_000, "code": 5_000, "books": 500}, budget_tokens=10_000, epoch_cap=4)
    assert caps == {"web": 1.0, "code": 1.0, "books": 0.2}
    bounds = {"web": (0.2, 0.9), "code": (0.05, 1.0)}
    w = sample_weights(prior, 200, seed=7, bounds=bounds, caps=caps)
    assert w.shape == (200, 3)
    np.testing.assert_array_equal(w, sample_weights(prior, 200, seed=7, bounds=bounds, caps=caps))
    assert not np.array_equal(w, sample_weights(prior, 200, seed=8, bounds=bounds, caps=caps))
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert (w[:, 0] >= 0.2 - 1e-9).all() and (w[:, 0] <= 0.9 + 1e-9).all()
    assert (w[:, 1] >= 0.05 - 1e-9).all()
    # The epoch cap: books' share x budget <= 4 x its 500 tokens.
    assert (w[:, 2] * 10_000 <= 4 * 500 + 1e-6).all()
    # Spread, not a point: the swarm spans the space around the prior.
    assert w[:, 0].std() > 0.05 and abs(np.median(w[:, 0]) - 0.7) < 0.2


def test_tight_bounds_are_met_by_projection():
    # Rejection alone would almost never land in these bounds: the rest are projected onto them.
    prior = {"a": 0.98, "b": 0.01, "c": 0.01}
    bounds = {"a": (0.0, 0.3), "b": (0.3, 0.4), "c": (0.3, 0.4)}
    w = sample_weights(prior, 50, seed=0, bounds=bounds, concentration=5.0)
    space = make_space(prior, bounds)
    assert space.contains(w).all() and len(w) == 50
    p = project(np.array([[2.0, -1.0, 0.0]]), np.zeros(3), np.ones(3))
    np.testing.assert_allclose(p, [[1.0, 0.0, 0.0]], atol=1e-9)


def test_infeasible_space_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="maximum shares add up to 0.6 < 1"):
        make_space({"a": 0.5, "b": 0.5}, caps={"a": 0.3, "b": 0.3})
    with pytest.raises(ConfigError, match="minimum shares add up to 1.2 > 1"):
        make_space({"a": 0.5, "b": 0.5}, bounds={"a": (0.6, 1), "b": (0.6, 1)})
