"""The one-file examples of docs/extending.md work as written: their code blocks are written to a module, named
under ``plugins`` and trained."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_extending_examples_register_and_train(tmp_path, tiny_cfg, monkeypatch):
    text = (ROOT / "docs" / "extending.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 3
    (tmp_path / "docs_components.py").write_text("\n\n".join(blocks))
    monkeypatch.syspath_prepend(str(tmp_path))
    from robustlab.config import ConfigError, config_from_dict
    from robustlab.engine import train
    tiny_cfg.update({"plugins": ["docs_components"],
                     "method": {"name": "mixed_at", "eps": 0.1, "steps": 2, "clean_weight": 0.5,
                                "regularizers": [{"name": "logit_squeeze"}]},
                     "optim": {"name": "sgd", "lr": 0.05, "minimizer": {"name": "lookahead_pass", "rho": 0.05}}})
    tiny_cfg["train"]["epochs"] = 2
    cfg = config_from_dict(tiny_cfg)
    assert cfg.method.regularizers[0].weight == 0.05              # the example's default weight, resolved
    res = train(cfg, tmp_path / "run", log=lambda s: None)
    assert res["status"] == "finished" and res["last"]["test_clean_acc"] > 0.5
    assert res["last"]["logit_sq"] > 0 and "clean_loss" in res["last"]
    tiny_cfg["method"]["clean_weight"] = 2
    with pytest.raises(ConfigError, match=r"method\.clean_weight: got 2; must be <= 1"):
        config_from_dict(tiny_cfg)
