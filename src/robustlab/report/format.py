"""How reports print numbers and tables: accuracies as percentages with one decimal, other numbers with three
significant figures (a linearity error of 3e-05 does not print as 0.0000), config values as short text (a
regulariser prints as ``elle(weight=300)``, not as a Python repr), spreads over seeds as mean ± sd (min-max).
HTML tables sit in horizontally scrolling boxes, so a wide table never widens the page."""
from __future__ import annotations

import html
import math
import statistics

PCT, NUM, INT, TEXT, SECONDS = "pct", "num", "int", "text", "seconds"


def is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def describe_value(v) -> str:
    """A config value as short text: ``{'name': 'elle', 'weight': 300.0}`` -> ``elle(weight=300)``."""
    if isinstance(v, dict):
        name = v.get("name")
        inner = ", ".join(f"{k}={describe_value(x)}" for k, x in v.items() if k != "name")
        return f"{name}({inner})" if name is not None else "{" + inner + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(describe_value(x) for x in v) + "]" if v else "[]"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def fmt(v, kind: str = NUM) -> str:
    if is_missing(v):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if kind == PCT and isinstance(v, (int, float)):
        return f"{100 * v:.1f}"
    if kind == SECONDS and isinstance(v, (int, float)):
        return f"{v:.0f}"
    if isinstance(v, int) or kind == INT:
        return str(v)
    if isinstance(v, float):
        return f"{v:.3g}"
    return describe_value(v)


def kind_of(key: str) -> str:
    """The printing kind of a metrics or table column by its name."""
    k = key.lower()
    if k.endswith("seconds"):
        return SECONDS
    if k in ("epoch", "epochs", "best_epoch", "best_pgd_epoch", "co_epoch"):
        return INT
    if "acc" in k or k in ("best_pgd", "last_pgd", "pgd_gap", "clean", "robust"):
        return PCT
    return NUM


def spread(values, kind: str = PCT) -> str:
    """mean ± sd (min–max) of the values present (one value: itself; none: a dash)."""
    vals = [v for v in values if not is_missing(v)]
    if not vals:
        return "–"
    if len(vals) == 1:
        return fmt(vals[0], kind)
    mean, sd = statistics.fmean(vals), statistics.stdev(vals)
    return f"{fmt(mean, kind)} ± {fmt(sd, kind)} ({fmt(min(vals), kind)}–{fmt(max(vals), kind)})"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]], first_left: bool = True) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    cls = " class='first-left'" if first_left else ""
    return f"<div class='scroll'><table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


STYLE = ("body{font-family:system-ui,sans-serif;max-width:1280px;margin:1.5em auto;padding:0 1em;color:#222}"
         "h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}"
         "img{max-width:100%;height:auto}.scroll{overflow-x:auto;max-width:100%}"
         "table{border-collapse:collapse;font-size:13px;margin:.4em 0}"
         "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}"
         "th{background:#f3f3f3}table.first-left td:first-child{text-align:left;font-family:monospace}"
         "ul.findings li{margin:.3em 0}.note{color:#555;font-size:.92em}")


def html_page(title: str, sections: list[tuple[str, str]], lead: str = "") -> str:
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    return (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"{lead}{body}</body></html>\n")
