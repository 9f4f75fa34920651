"""The per-epoch curves of a study's runs as one CSV (a search round's record beside its study file).

    python benchmarks/search_curves.py STUDY_DIR OUT.csv [EXTRA_COLUMN ...]

Columns: study, label, seed, kernel path, epoch, lr, train accuracy (on the method's inputs), and the monitor's clean,
PGD and FGSM accuracy on the validation split and the test subset (robustlab.engine: metrics.jsonl); then any other
metrics.jsonl columns named (e.g. ARAT's ``arat_w_adv``, ``train_clean_acc``; ``trainset_pgd_acc``), empty where a
run has none.
"""
from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from robustlab.core.io import read_json, read_jsonl, write_text  # noqa: E402
from robustlab.core.layout import load_manifest, trial_dir  # noqa: E402

COLUMNS = ["lr", "train_acc", "val_clean_acc", "val_pgd_acc", "val_fgsm_acc", "test_clean_acc", "test_pgd_acc",
           "test_fgsm_acc"]


def curves(study: Path, columns: list[str] = COLUMNS) -> list[list]:
    manifest = load_manifest(study)
    rows = []
    for t in manifest["trials"]:
        run = trial_dir(study, t["name"])
        env = read_json(run / "env.json") if (run / "env.json").is_file() else {}
        path = (env.get("kernel_path") or {}).get("cpu_capability")
        for r in read_jsonl(run / "metrics.jsonl"):
            rows.append([manifest.get("name", study.name), t["overrides"].get("label", t["name"]), env.get("seed"), path,
                         r["epoch"]] + [("" if r.get(c) is None else f"{r[c]:.4g}") for c in columns])
    return rows


def main(study: str, out: str, *extra: str) -> None:
    columns = COLUMNS + [c for c in extra if c not in COLUMNS]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["study", "label", "seed", "kernel_path", "epoch"] + columns)
    w.writerows(curves(Path(study), columns))
    write_text(Path(out), buf.getvalue())
    print(out)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
