"""Reports: PNG curves and a Markdown + HTML summary, for one run or for a group of runs."""
from robustlab.report.runs import load_run, write_comparison_report, write_run_report

__all__ = ["load_run", "write_comparison_report", "write_run_report"]
