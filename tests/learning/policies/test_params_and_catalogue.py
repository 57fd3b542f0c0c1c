"""Strategy names, parameters and the catalogue: every mistake is a CONFIG_ERROR naming
what is valid."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qortex_mcp.errors import ConfigError
from qortex_mcp.learning.policies import DEFAULT_POLICY, POLICIES, catalogue, make_policy

DESIGN_NAMES = ["thompson", "mean", "ucb1", "ucb1_tuned", "kl_ucb", "moss", "eps_greedy",
                "softmax", "exp3", "gaussian_thompson", "top_two_thompson", "random"]

# (strategy, parameter, a value out of range, a value in range)
RANGES = [
    ("thompson", "alpha0", 0.0, 2.0), ("mean", "beta0", 2e6, 0.5),
    ("ucb1", "c", -1.0, 0.5), ("ucb1_tuned", "variance_cap", 0.0, 0.1),
    ("kl_ucb", "c", -0.1, 3.0), ("moss", "alpha", -1.0, 2.0),
    ("eps_greedy", "epsilon", 1.5, 0.2), ("eps_greedy", "decay", -0.1, 0.01),
    ("eps_greedy", "floor", 2.0, 0.01), ("softmax", "temperature", 0.0, 0.5),
    ("exp3", "eta", 0.0, 0.1), ("exp3", "gamma", -0.5, 0.01),
    ("gaussian_thompson", "kappa0", 0.0, 2.0), ("gaussian_thompson", "alpha0", -1.0, 2.0),
    ("top_two_thompson", "beta", 0.0, 0.7), ("top_two_thompson", "max_resamples", 0, 8),
]


def test_the_registry_holds_exactly_the_design_names_with_thompson_the_default() -> None:
    assert list(POLICIES) == DESIGN_NAMES
    assert DEFAULT_POLICY == "thompson"
    assert make_policy().name == "thompson"


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_every_strategy_builds_with_its_defaults(name: str) -> None:
    policy = make_policy(name)
    assert policy.name == name
    assert set(policy.params) == {p.name for p in policy.parameters}
    assert policy.zeros(4).shape == (4, len(policy.stats))


def test_an_unknown_strategy_is_a_config_error_listing_every_valid_name() -> None:
    with pytest.raises(ConfigError) as err:
        make_policy("ucb2")
    assert err.value.code == "CONFIG_ERROR"
    assert "'ucb2'" in err.value.message
    assert all(name in err.value.message for name in DESIGN_NAMES)


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_an_unknown_parameter_is_a_config_error_naming_the_valid_ones(name: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_policy(name, {"nope": 1})
    valid = [p.name for p in POLICIES[name].parameters]
    assert "'nope'" in err.value.message
    assert all(v in err.value.message for v in valid) if valid else (
        "no parameters" in err.value.message)


@pytest.mark.parametrize(("name", "param", "bad", "good"), RANGES)
def test_a_value_out_of_range_is_a_config_error_naming_the_range(
    name: str, param: str, bad: float, good: float
) -> None:
    with pytest.raises(ConfigError) as err:
        make_policy(name, {param: bad})
    spec = next(p for p in POLICIES[name].parameters if p.name == param)
    assert spec.constraints in err.value.message
    assert param in err.value.message
    assert make_policy(name, {param: good}).params[param] == good


@pytest.mark.parametrize("bad", [True, "0.5", None, float("nan"), float("inf"), [1.0]])
def test_non_numbers_booleans_and_non_finite_values_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError):
        make_policy("kl_ucb", {"c": bad})


def test_an_integer_parameter_refuses_fractions_and_nullable_ones_take_none() -> None:
    with pytest.raises(ConfigError, match="integer"):
        make_policy("top_two_thompson", {"max_resamples": 2.5})
    assert make_policy("top_two_thompson", {"max_resamples": 8.0}).params["max_resamples"] == 8
    assert make_policy("exp3", {"eta": None, "gamma": None}).params == {"eta": None,
                                                                         "gamma": None}


def test_parameters_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match="table"):
        make_policy("ucb1", [("c", 1.0)])  # type: ignore[arg-type]


def test_the_catalogue_describes_every_strategy() -> None:
    entries = catalogue()
    assert [e.name for e in entries] == DESIGN_NAMES
    by_name = {e.name: e for e in entries}
    assert by_name["thompson"].category == "bayesian"
    assert by_name["exp3"].category == "adversarial"
    assert by_name["kl_ucb"].category == "stochastic"
    assert by_name["random"].category == "baseline"
    assert [e.name for e in catalogue("continuous")] == ["gaussian_thompson"]
    for entry in entries:
        assert set(entry.reward_types) >= {"binary", "graded"}
        row = entry.as_dict()
        assert row["statistics"]
        assert row["summary"]
        for param in row["parameters"]:  # type: ignore[attr-defined]
            assert set(param) == {"name", "type", "default", "constraints", "description"}
    kl = by_name["kl_ucb"].as_dict()["parameters"][0]  # type: ignore[index]
    assert kl == {"name": "c", "type": "float", "default": 0.0, "constraints": "0 <= c",
                  "description": kl["description"]}


def test_the_policies_never_import_mcp_or_the_configuration() -> None:
    code = ("import sys; sys.modules['mcp'] = None; sys.modules['qortex_mcp.config'] = None\n"
            "import qortex_mcp.learning.policies as p\n"
            "p.make_policy('kl_ucb').select(p.make_policy('kl_ucb').zeros(3), 1, "
            "__import__('numpy').random.default_rng(0))\n"
            "bad = [m for m in sys.modules if m == 'mcp' or m.startswith('mcp.') "
            "or m == 'qortex_mcp.config']\n"
            "assert all(sys.modules[m] is None for m in bad), bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_catalogue_is_where_the_design_names_it() -> None:
    from qortex_mcp.learning import policies, strategies

    assert strategies.catalogue is policies.catalogue
    assert {"thompson", "kl_ucb", "exp3", "gaussian_thompson"} <= {
        info.name for info in strategies.catalogue()}
