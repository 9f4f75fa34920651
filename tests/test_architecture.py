"""The architecture's contracts (pyproject.toml, [tool.importlinter]) hold: imports flow downward only."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install 'robustlab[test]')")
    proc = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "0 broken" in proc.stdout


def test_every_component_registry_lists_its_entries_with_configs():
    """Each registered component declares a config class that the schema can build by name."""
    from robustlab.config import config_from_dict  # noqa: F401  (imports every registry)
    from robustlab.diagnostics import DIAGNOSTICS
    from robustlab.protocols import EVAL_ATTACKS
    from robustlab.methods import METHODS, REGULARIZERS
    from robustlab.methods.regularizers import WEIGHT_SCHEDULES
    from robustlab.models import MODELS, NORM_LAYERS
    from robustlab.optim import LR_SCHEDULES, OPTIMIZERS
    for reg in (METHODS, REGULARIZERS, WEIGHT_SCHEDULES, OPTIMIZERS, LR_SCHEDULES, DIAGNOSTICS, EVAL_ATTACKS, MODELS,
                NORM_LAYERS):
        assert len(reg) >= 1
        for name in reg:
            cfg = reg.config_class(name)(name=name)
            assert cfg.name == name
