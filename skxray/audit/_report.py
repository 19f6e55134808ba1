"""The audit's results: :class:`Finding`, :class:`AuditReport` and how they render."""

import json
import textwrap
from dataclasses import dataclass, field

import pandas as pd

from skxray._html import Fragment, badge, esc, img_html, inline_table, table_html
from skxray._utils import format_value, jsonable, png_base64
from skxray.audit._displays import (
    AuditCalibrationDisplay,
    LabelIssuesDisplay,
    LungGradCAMDisplay,
    LungMaskingDisplay,
)

#: The checks, in report order. Pass a subset as ``checks=`` to :func:`audit`.
CHECKS = ("leakage", "duplicates", "sources", "lungs", "calibration", "labels")

TITLES = {
    "leakage": "1. Patient leakage",
    "duplicates": "2. Near-duplicates",
    "sources": "3. Source confounding",
    "lungs": "4. Where the model looks",
    "calibration": "5. Class balance and calibration",
    "labels": "6. Label issues",
}

#: Verdicts from best to worst.
VERDICTS = ("ok", "warning", "fail")

#: Small plots, several per section: 80 dpi keeps the HTML fragment light.
_PLOT_DPI = 80
#: Longest table shown in the HTML (the JSON export has every row).
_MAX_ROWS = 50


def worst_verdict(*verdicts):
    """The worst of ``verdicts`` ("ok" for none)."""
    return max(verdicts, key=VERDICTS.index, default="ok")


@dataclass
class Finding:
    """The result of one audit check.

    Attributes
    ----------
    name : str
        Key of the check, one of :data:`CHECKS`.
    verdict : {"ok", "warning", "fail"}
        "fail" when the check found a problem that invalidates the reported
        score, "warning" when something needs a look (or could not be
        checked), "ok" otherwise.
    explanation : str
        One plain sentence for a clinician-researcher.
    figures : dict
        Named numbers (floats, ints, None when not computable) and short
        lists; JSON-serialisable.
    details : dict of str to pandas.DataFrame
        Tables: e.g. ``"pairs"`` (the near-duplicate pairs),
        ``"contingency"`` (class x source counts), ``"masking"``,
        ``"calibration_curve"``.
    title : str
        Human-readable name with its number, e.g. "3. Source confounding".
    summary : str
        The key figures in one short line (the table's middle column).
    arrays : dict of str to ndarray
        Images used by :meth:`AuditReport.to_html` (e.g. the mean Grad-CAM
        heatmap); not exported by ``to_dict``.
    """

    name: str
    verdict: str
    explanation: str
    figures: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    title: str = ""
    summary: str = ""
    arrays: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}; got {self.verdict!r}.")
        if not self.title:
            self.title = TITLES.get(self.name, str(self.name))

    def to_dict(self):
        """The finding as JSON-serialisable dict (tables as lists of records)."""
        return {
            "name": self.name,
            "title": self.title,
            "verdict": self.verdict,
            "explanation": self.explanation,
            "summary": self.summary,
            "figures": jsonable(self.figures, unknown="str"),
            "details": {k: _frame_records(v) for k, v in self.details.items()},
        }

    def plots(self):
        """The plots drawn for this finding, as ``(alt text, base64 PNG)`` pairs.

        Each is the figure of one of :meth:`displays`, at 80 dpi.
        """
        return [
            (disp.alt_text, png_base64(disp.figure_, dpi=_PLOT_DPI))
            for disp in self.displays()
        ]

    def displays(self):
        """The displays of this finding's plots, drawn, in page order.

        Returns
        -------
        list of display
            For ``"lungs"`` a :class:`LungMaskingDisplay` and, when the model
            could be explained, a :class:`LungGradCAMDisplay`; for
            ``"calibration"`` an :class:`AuditCalibrationDisplay`; for
            ``"labels"`` a :class:`LabelIssuesDisplay` when there are
            suspects; none for the other checks.
        """
        return [cls.from_finding(self) for cls, shows in _DISPLAYS.get(self.name, ())
                if shows(self)]


@dataclass(frozen=True)
class AuditSection:
    """One finding, ready to render: what :meth:`AuditReport.sections` returns.

    Attributes
    ----------
    name, title, verdict, explanation, summary : str
        As in :class:`Finding`.
    figures : list of (str, str)
        The key figures as ``(name, formatted value)`` rows.
    tables : list of (str, pandas.DataFrame)
        Caption and table, at most 50 rows each (the caption says when
        rows were left out).
    plots : list of (str, str)
        ``(alt text, base64 PNG)`` of each plot.
    """

    name: str
    title: str
    verdict: str
    explanation: str
    summary: str
    figures: list
    tables: list
    plots: list


class AuditReport:
    """The findings of :func:`audit`, one per check.

    Print it for a text table, call :meth:`to_dict` / :meth:`to_json` to
    export it, or :meth:`to_html` for a section of an HTML report (also shown
    by Jupyter). ``report["lungs"]`` returns one :class:`Finding`;
    :meth:`facts` and :meth:`sections` give the same content as plain data
    for other renderers, and :meth:`html_sections` as HTML pieces for a page
    that lays them out itself.

    Attributes
    ----------
    findings : list of Finding
        One per check run, in the order of :data:`CHECKS`.
    verdict : {"ok", "warning", "fail"}
        The worst verdict of the findings.
    info : dict
        What was audited: estimator, number of images, classes and their
        counts, patients, sources, folds, fits, elapsed seconds, thresholds.
    """

    #: Heading of the HTML section.
    title = "Shortcut and leakage audit"

    def __init__(self, findings, info=None):
        self.findings = list(findings)
        self.info = dict(info or {})

    @property
    def verdict(self):
        """The worst verdict of the findings ("ok" when there are none)."""
        return worst_verdict(*(f.verdict for f in self.findings))

    def __getitem__(self, name):
        for finding in self.findings:
            if finding.name == name:
                return finding
        raise KeyError(f"No finding {name!r}; this report has {[f.name for f in self.findings]}.")

    def __iter__(self):
        return iter(self.findings)

    def __len__(self):
        return len(self.findings)

    def __repr__(self):
        verdicts = ", ".join(f"{f.name}={f.verdict}" for f in self.findings)
        return f"AuditReport(verdict={self.verdict!r}, {verdicts})"

    # ------------------------------------------------------------- exports
    def to_dict(self):
        """The report as a JSON-serialisable dict.

        Returns
        -------
        dict
            ``{"verdict", "info", "findings": [finding.to_dict(), ...]}``;
            NaN and infinite numbers become None.
        """
        return {
            "verdict": self.verdict,
            "info": jsonable(self.info, unknown="str"),
            "findings": [f.to_dict() for f in self.findings],
        }

    def to_json(self, path=None, *, indent=2):
        """The report as JSON text, optionally written to ``path``.

        Parameters
        ----------
        path : str, path-like or None, default=None
            File to write (UTF-8); None only returns the text.
        indent : int or None, default=2
            Indentation of the JSON text.

        Returns
        -------
        str
            The JSON text (strict JSON: no NaN).
        """
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        return text

    # ---------------------------------------------------- structured content
    def facts(self):
        """What was audited, as ``(label, text)`` rows: model, images, patients, ...

        Returns
        -------
        list of (str, str)
            Only the facts the report knows, in a fixed order; the last is
            ``("Classes", "A (n), B (m)")`` when class counts are known.
        """
        info = self.info
        rows = []
        for key, label in (
            ("estimator", "Model"),
            ("n_samples", "Images"),
            ("n_patients", "Patients"),
            ("n_sources", "Sources"),
            ("cv", "Folds"),
            ("n_fits", "Fits"),
        ):
            if info.get(key) is not None:
                rows.append((label, str(info[key])))
        if info.get("class_counts"):
            rows.append(
                ("Classes", ", ".join(f"{c} ({n})" for c, n in info["class_counts"].items()))
            )
        return rows

    def sections(self, *, plots=True):
        """One :class:`AuditSection` per finding: the report's body as data.

        Parameters
        ----------
        plots : bool, default=True
            Draw the plots (matplotlib); False leaves ``plots`` empty.

        Returns
        -------
        list of AuditSection
            In the order of the findings.
        """
        return [_section(f, plots=plots) for f in self.findings]

    # ------------------------------------------------------------- rendering
    def __str__(self):
        return _render_text(self)

    def html_sections(self, *, plots=True):
        """The HTML body in pieces, for a page that lays them out itself.

        :meth:`to_html` joins them; :meth:`skxray.report.Report.add_audit`
        keeps the overview in view and folds the detail away.

        Parameters
        ----------
        plots : bool, default=True
            Draw the plots (matplotlib); False leaves them out.

        Returns
        -------
        list of skxray._html.Fragment
            Frozen ``(title, html, detail)`` pieces: first the overview (what
            was audited, the overall verdict, one row per check;
            ``detail=False``), then one per finding, titled as the finding
            (its heading and badge, explanation, key figures, plots and
            tables; ``detail=True``). Text is escaped, plots are embedded
            and styles are inline.
        """
        overview = Fragment("Overview", _overview_html(self))
        return [overview] + [
            Fragment(section.title, _section_html(section), detail=True)
            for section in self.sections(plots=plots)
        ]

    def to_html(self, *, wrap=True):
        """The report as an HTML fragment.

        Self-contained: text is escaped, plots are embedded as base64 PNG
        ``data:`` URIs and styles are inline, so the fragment can be pasted
        into any page and opened offline. No external URL is referenced.

        Parameters
        ----------
        wrap : bool, default=True
            Wrap the content in a ``<section>`` headed by :attr:`title`;
            False returns only the content, for a page that supplies its own
            heading (:meth:`html_sections` gives the content in pieces).

        Returns
        -------
        str
            The HTML fragment.
        """
        body = "\n".join(piece.html for piece in self.html_sections())
        if not wrap:
            return body
        return "\n".join(
            ['<section class="skxray-audit">', f"<h2>{esc(self.title)}</h2>", body, "</section>"]
        )

    def _repr_html_(self):
        return self.to_html()


# --------------------------------------------------------------------------
# rendering


def _section(finding, *, plots=True):
    figures = [(str(k), str(format_value(v, ".3f"))) for k, v in finding.figures.items()]
    tables = []
    for key, frame in finding.details.items():
        if frame is None or len(frame) == 0:
            continue
        more = f" (first {_MAX_ROWS} of {len(frame)} rows)" if len(frame) > _MAX_ROWS else ""
        tables.append((key.replace("_", " ") + more, frame.head(_MAX_ROWS)))
    return AuditSection(
        name=finding.name,
        title=finding.title,
        verdict=finding.verdict,
        explanation=finding.explanation,
        summary=finding.summary,
        figures=figures,
        tables=tables,
        plots=finding.plots() if plots else [],
    )


def _overview_html(report):
    """What was audited, the overall verdict and one row per check."""
    facts = "; ".join(f"{esc(label)}: {esc(text)}" for label, text in report.facts())
    rows = [
        [esc(f.title), badge(f.verdict), esc(f.explanation), esc(f.summary)]
        for f in report.findings
    ]
    return "\n".join(
        [
            f"<p>{facts}</p>",
            f"<p>Overall verdict: {badge(report.verdict)}</p>",
            inline_table(rows, head=["Check", "Verdict", "Explanation", "Key figures"]),
        ]
    )


def _section_html(section):
    """One finding: heading and badge, explanation, key figures, plots and tables."""
    parts = [
        f"<h3>{esc(section.title)} {badge(section.verdict)}</h3>",
        f"<p>{esc(section.explanation)}</p>",
    ]
    if section.figures:
        parts.append(inline_table([[esc(k), esc(v)] for k, v in section.figures]))
    parts += [f"<p>{img_html(png, alt)}</p>" for alt, png in section.plots]
    for caption, frame in section.tables:
        parts += [f"<h4>{esc(caption)}</h4>", table_html(frame, spec=".3f")]
    return "\n".join(parts)


def _render_text(report):
    info = report.info
    head = "Shortcut and leakage audit"
    if info.get("estimator"):
        head += f" of {info['estimator']}"
    lines = [head]
    facts = []
    if info.get("n_samples") is not None:
        counts = info.get("class_counts") or {}
        classes = ", ".join(f"{c} ({n})" for c, n in counts.items())
        facts.append(f"{info['n_samples']} images" + (f": {classes}" if classes else ""))
    if info.get("n_patients"):
        facts.append(f"{info['n_patients']} patients")
    if info.get("n_sources"):
        facts.append(f"{info['n_sources']} sources")
    if info.get("cv"):
        facts.append(f"{info['cv']}-fold CV, {info.get('n_fits', 0)} fits")
    if info.get("elapsed_s") is not None:
        facts.append(f"{info['elapsed_s']:.0f} s")
    if facts:
        lines.extend(textwrap.wrap("; ".join(facts), 100))
    lines.append(f"Overall verdict: {report.verdict.upper()}")
    lines.append("")
    w_check = max([len("Check")] + [len(f.title) for f in report.findings])
    w_verdict = len("WARNING")
    header = f"{'Check':<{w_check}}  {'Verdict':<{w_verdict}}  Key figures"
    lines.append(header)
    lines.append("-" * max(len(header), 100))
    indent = " " * (w_check + 2)
    for f in report.findings:
        lines.append(f"{f.title:<{w_check}}  {f.verdict.upper():<{w_verdict}}  {f.summary}")
        lines.extend(
            textwrap.wrap(f.explanation, 100, initial_indent=indent, subsequent_indent=indent)
        )
    return "\n".join(lines)


def _frame_records(frame):
    if frame is None:
        return []
    frame = frame.reset_index() if not isinstance(frame.index, pd.RangeIndex) else frame
    return jsonable(frame.to_dict(orient="records"), unknown="str")


# --------------------------------------------------------------------------
# plots: each drawn by a display of skxray.audit._displays

#: The displays of each check's plots, in page order; a display is drawn when
#: its finding holds its data (e.g. no Grad-CAM heatmap for a model without
#: convolutions).
_DISPLAYS = {
    "lungs": ((LungMaskingDisplay, lambda f: _has_rows(f.details.get("masking"))),
              (LungGradCAMDisplay, lambda f: f.arrays.get("mean_gradcam") is not None)),
    "calibration": ((AuditCalibrationDisplay,
                     lambda f: _has_rows(f.details.get("calibration_curve"))),),
    "labels": ((LabelIssuesDisplay,
                lambda f: _has_rows(f.arrays.get("suspect_images"))
                and f.details.get("suspects") is not None),),
}


def _has_rows(table):
    return table is not None and len(table) > 0
