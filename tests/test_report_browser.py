"""Reports a reviewer can read (issue 15, section 2): the HTML rendered by a real headless browser (Chromium,
Debian's package) is not blank and has no horizontal overflow at 1,400 px; numbers print as percentages; the run
and study reports show `robustlab eval` results; a run with no epoch gets a report, not a warning."""
import re
import shutil
import subprocess
import warnings

import pytest

from robustlab.config import config_from_dict
from robustlab.sweep import run_sweep
from robustlab.sweep.study import expand_study

BASE = {"seed": 0, "data": {"name": "synthetic", "val_size": 64, "batch_size": 64},
        "model": {"name": "wong_mnist"}, "method": {"name": "fgsm", "eps": 0.1},
        "optim": {"lr": 0.05}, "train": {"epochs": 2, "progress": "none", "threads": 1},
        "monitor": {"eval_points": 64, "attack_steps": 2}, "final_eval": {"points": 32, "steps": 2, "restarts": 1}}
BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep")
    raw = {"name": "a-study-with-rather-long-trial-names", "base": BASE, "grid": {"seed": [0, 1]}, "workers": 1,
           "list": [{"label": "FGSM-AT with a long label", "method.regularizers": [{"name": "elle", "weight": 300.0}]},
                    {"label": "PGD-2-AT", "method.name": "pgd", "method.steps": 2}]}
    run_sweep(expand_study(raw), root / "s", log=lambda s: None)
    from robustlab.eval.command import EvalRequest, run_eval
    trial = sorted((root / "s" / "trials").iterdir())[0]
    run_eval(EvalRequest(path=str(trial), checkpoint="best", attack={"name": "pgd", "steps": 3, "restarts": 1},
                         sanity=32, n=64, batch_size=64, device="cpu"))
    from robustlab.report import write_run_report
    from robustlab.report.study import write_study_report
    write_run_report(trial)
    write_study_report(root / "s")
    return root / "s", trial


def test_reports_show_evaluations_and_percentages(study):
    folder, trial = study
    run_md = (trial / "report" / "report.md").read_text()
    assert "## Evaluations (robustlab eval)" in run_md and "PGD-3-1" in run_md
    assert "robustlab eval PGD-3-1 (Linf eps 0.1, 64 points, best checkpoint)" in run_md
    study_md = (folder / "report" / "report.md").read_text()
    assert study_md.index("## What the runs show") < study_md.index("![") < study_md.index("| group |")
    assert "CO in " in study_md and "(mean ± sd, min–max over 2 runs)" in study_md
    assert "elle(weight=300)" in study_md and "{'name'" not in study_md          # config values as text, not reprs
    assert not re.search(r"\| 0\.\d{4} \|", study_md)                              # no 4-decimal fractions
    assert "[table.csv: every trial, every column](../table.csv)" in study_md
    html = (folder / "report" / "report.html").read_text()
    assert "<a href='../table.csv'>" in html


def test_report_of_a_run_with_no_epoch(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text(config_from_dict(BASE).to_yaml())
    from robustlab.report import write_run_report
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # matplotlib must not warn (it did on empty curves)
        out = write_run_report(run)
    assert "No epoch has been recorded yet" in (out / "report.md").read_text()


@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium (apt-get install chromium; .ci/run installs it)")
@pytest.mark.parametrize("which", ["study", "run"])
def test_html_in_a_headless_browser(study, tmp_path, which):
    folder, trial = study
    page = (folder if which == "study" else trial) / "report" / "report.html"
    probe = page.with_name("probe.html")      # beside it, so the images load; the script reports the page width
    probe.write_text(page.read_text().replace("</body>", "<script>document.title = 'W=' + document.documentElement"
                                               ".scrollWidth + ' V=' + window.innerWidth;</script></body>"))
    common = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1000"]
    dom = subprocess.run(common + ["--virtual-time-budget=3000", "--dump-dom", probe.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    width, view = map(int, re.search(r"W=(\d+) V=(\d+)", dom).groups())
    assert width <= view == 1400, f"horizontal overflow: the page is {width} px wide in a {view} px window"
    shot = tmp_path / "shot.png"
    subprocess.run(common + [f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    from PIL import Image
    img = Image.open(shot).convert("L")
    lo, hi = img.getextrema()
    assert img.size == (1400, 1000) and hi - lo > 100            # not blank: text and figures drawn
    assert sum(1 for count in img.resize((140, 100)).histogram() if count) > 20   # many grey levels
    probe.unlink()
