"""The GPU check script runs its CUDA paths' CPU twins (fp32 loss scaling through a two-pass step, bf16 +
channels_last, AutoAttack through the evaluation library) and writes its table."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_on_cpu_and_records(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "results.md"
    assert mod.main(["--device", "cpu", "--results", str(out)]) == 0
    text = out.read_text()
    assert "| fp16_two_pass | pass |" in text and "| bf16_channels_last | pass |" in text
    assert "| compile | skipped |" in text and "| ddp_nccl | skipped |" in text
    assert "| eval_autoattack | pass |" in text or "autoattack extra is not installed" in text
