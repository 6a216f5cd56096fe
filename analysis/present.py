"""How the analysis shows its numbers: one number format, JSON values, HTML tables, figures and pages.

Every summary line, table and report page goes through these functions, so a number reads the
same in the printed text, the HTML and the JSON. Figures are drawn in `analysis.plots` (the one
module that imports matplotlib); here they are only embedded.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np
import pandas as pd

DIGITS = 4  # significant digits of a number in text and tables


def number(value, digits: int = DIGITS) -> str:
    """A number with `digits` significant digits; 'nan' for a missing or non-finite one.

    >>> number(0.123456), number(12345.6, 3), number(float("nan")), number(None)
    ('0.1235', '1.23e+04', 'nan', 'nan')
    """
    return "nan" if value is None or not np.isfinite(value) else f"{value:.{digits}g}"


def data_size(value) -> str:
    """A data size as people read it: thousands separated up to 1e8, then three significant digits.

    >>> data_size(200000), data_size(3e9)
    ('200,000', '3e+09')
    """
    return f"{value:,.0f}" if value < 1e8 else f"{value:.3g}"


def percent(share: float) -> str:
    """A share as a whole percentage, the way the summaries write intervals.

    >>> percent(0.95)
    '95 %'
    """
    return f"{round(100 * share)} %"


def json_safe(value):
    """Plain JSON values: NumPy scalars and arrays, tuples, DataFrames (as records) and non-finite
    floats (as None).

    >>> json_safe({"a": np.float64("nan"), "b": (np.int64(2), 0.5)})
    {'a': None, 'b': [2, 0.5]}
    """
    if isinstance(value, pd.DataFrame):
        return json_safe(value.to_dict(orient="records"))
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def html_table(frame: pd.DataFrame) -> str:
    """A table for the report page, numbers as `number` writes them, missing values as '–'.

    >>> html_table(pd.DataFrame({"l": [8.0], "loss": [0.693147]})).count("0.6931")
    1
    """
    return frame.to_html(index=False, border=0, float_format=number, na_rep="–", classes="t")


def html_figure(path, caption: str) -> str:
    """A figure with its PNG embedded, so that a report page stays one self-contained file."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    caption = html.escape(caption)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'


def html_text(text: str) -> str:
    """Text as printed, preformatted on the page.

    >>> html_text("l* = 24 <= 32")
    '<pre>l* = 24 &lt;= 32</pre>'
    """
    return f"<pre>{html.escape(text)}</pre>"


def html_sections(sections) -> str:
    """(title, HTML content) pairs as h2 sections.

    >>> html_sections([("Law", "<pre>β = 0.4</pre>")])
    '<h2>Law</h2><pre>β = 0.4</pre>'
    """
    return "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
pre{background:#f5f5f5;padding:1em;white-space:pre-wrap}img{max-width:100%}figure{margin:1em 0}
table.t{display:block;overflow-x:auto;border-collapse:collapse;font-size:13px}table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
figcaption{font-size:13px;color:#555}"""


def write_html_page(path, title: str, text: str, body: str) -> Path:
    """A self-contained report page: the title, `text` as printed (preformatted), then `body`."""
    path = Path(path)
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                    f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
                    f"{html_text(text)}{body}</body></html>", encoding="utf-8")
    return path
