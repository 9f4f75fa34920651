"""The typed front door of ``robustlab eval`` (issue 24): the command line becomes one EvalRequest, checked once; the
pgd protocols' flags are generated from their config (help, choices, defaults), so the two cannot drift."""
import dataclasses

import pytest

from robustlab.cli import build_parser
from robustlab.core.errors import ConfigError
from robustlab.eval.command import EvalRequest
from robustlab.eval.library import protocol_config
from robustlab.protocols import PGDProtocolConfig


def request(*argv):
    return EvalRequest.from_args(build_parser().parse_args(["eval", *argv]))


def test_flags_not_given_take_the_protocols_defaults():
    req = request("RUN")
    assert req.attack == {"name": "pgd"} and req.checkpoint is None and req.n == 1000
    proto = protocol_config(req.attack)
    defaults = PGDProtocolConfig()
    assert (proto.steps, proto.restarts, proto.alpha, proto.loss) == (defaults.steps, defaults.restarts, None, "ce")
    req = request("RUN", "--steps", "7", "--alpha", "1/255", "--loss", "cw", "--n", "64")
    assert req.attack == {"name": "pgd", "steps": 7, "alpha": pytest.approx(1 / 255), "loss": "cw"} and req.n == 64
    trial = dataclasses.replace(req, path="S/trials/t0", checkpoint="last")     # what a study evaluation does per trial
    assert (trial.attack, trial.n, trial.checkpoint) == (req.attack, 64, "last") and req.checkpoint is None


def test_help_and_choices_come_from_the_protocol_config():
    eval_parser = next(a for a in build_parser()._subparsers._group_actions[0].choices.values()
                       if any(o.dest == "restarts" for o in a._actions))
    by_dest = {a.dest: a for a in eval_parser._actions}
    fields = {f.name: f for f in dataclasses.fields(PGDProtocolConfig)}
    assert f"default {fields['steps'].default}" in by_dest["steps"].help
    assert f"default {fields['restarts'].default}" in by_dest["restarts"].help
    assert list(by_dest["loss"].choices) == fields["loss"].metadata["choices"]


def test_a_setting_the_protocol_does_not_take_is_refused():
    with pytest.raises(ConfigError, match="--restarts: the autoattack protocol does not take it"):
        request("RUN", "--attack", "autoattack", "--restarts", "2")
    with pytest.raises(ConfigError, match="--steps: got 0"):
        protocol_config(request("RUN", "--steps", "0").attack)
