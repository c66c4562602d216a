"""``report.html``: one page to read a training run or an evaluation, opened from disk.

The page needs no server and no network: the style sheet and any script are inline, and
every image is either a file referenced by a relative path (the plots written beside the
report) or embedded as a ``data:`` URI (thumbnails made here; every image with
``embed=True``, which gives a single file that can be mailed).  Class names, paths and
settings are user data and are always HTML-escaped.

>>> page = Report("metrics_out/report.html", "Evaluation of logs/run/best.pth")
>>> page.add_results(metrics)                       # eval.py's metrics.json dict
>>> page.add_confusion(matrix, classes, image="metrics_out/confusion_matrix.png")
>>> page.add_per_class(classes, result.report)
>>> page.add_confused(most_confused(matrix), classes)
>>> page.add_gallery(errors, classes, heatmaps=maps)
>>> page.write()

Sections appear in the order they are added.
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import mimetypes
import os
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import quote

import numpy as np
import torch
from PIL import Image

from utils.evaluation.cam import as_rgb_array, overlay
from utils.evaluation.intervals import Interval, format_ci, format_interval
from utils.evaluation.metrics import TOP_K, ClassReport, shown_metrics
from utils.evaluation.mistakes import ConfusedPair, Prediction, thumbnail
from utils.evaluation.plots import whole_percent

#: Up to this many classes the confusion matrix is an HTML table; beyond, its image.
MAX_TABLE_CLASSES = 30
#: Side (px) of the gallery thumbnails.
THUMB = 176


class Report:
    """An HTML page built section by section and written with :meth:`write`."""

    def __init__(self, path: str | os.PathLike, title: str, subtitle: str | None = None,
                 embed: bool = False):
        self.path = Path(path)
        self.title = title
        self.subtitle = subtitle
        self.embed = embed
        self._sections: list[tuple[str, str, str]] = []  # (anchor, heading, body html)
        self._scripts: list[str] = []

    # ------------------------------------------------------------------ sections
    def add_settings(self, settings: Mapping[str, Any], heading: str = "Plan and settings",
                     plan: str | None = None) -> None:
        """Every setting as name and value (nested mappings flattened as ``a.b``), in as
        many columns as fit, preceded by ``plan`` (printed text, kept as it is) when given."""
        items = "".join(f"<div><dt>{escape(key)}</dt><dd>{escape(_format_value(value))}</dd></div>"
                        for key, value in _flatten(settings))
        body = f"<pre class='plan'>{escape(plan)}</pre>" if plan else ""
        self.add_section(heading, body + f"<dl class='settings'>{items}</dl>")

    def add_results(self, metrics: Mapping[str, Any], heading: str = "Test results") -> None:
        """Headline figures as cards, from an evaluation's summary (``results.json``'s
        ``test``, ``metrics.json``): each figure
        :func:`~utils.evaluation.metrics.shown_metrics` keeps, under it its 95% interval
        when it has one, then the image count."""
        k = metrics.get("k", TOP_K)
        cards = [(m.key, m.title(k) + (" accuracy" if m.key in ("top1", "topk") else ""),
                  m.show) for m in shown_metrics(metrics.get("classes"))]
        cards.append(("images", "images", lambda v: f"{v:,}"))
        body = "".join(
            f"<div class='card'><div class='value'>{escape(fmt(metrics[key]))}</div>"
            f"<div class='label'>{escape(label)}</div>{_ci_note(metrics.get(key + '_ci'))}"
            "</div>" for key, label, fmt in cards if metrics.get(key) is not None)
        self.add_section(heading, f"<div class='cards'>{body}</div>")

    def add_images(self, heading: str, images: Sequence, captions: Sequence[str] = ()) -> None:
        """Figures side by side: files (e.g. ``loss.png``) or in-memory images."""
        captions = list(captions) + [""] * (len(images) - len(captions))
        figures = "".join(
            f"<figure>{self.image_tag(image, caption or _name(image))}"
            f"{f'<figcaption>{escape(caption)}</figcaption>' if caption else ''}</figure>"
            for image, caption in zip(images, captions))
        self.add_section(heading, f"<div class='figures'>{figures}</div>")

    def add_confusion(self, matrix, classes: Sequence[str], image=None,
                      heading: str = "Confusion matrix") -> None:
        """Counts and row percentages (rows = true class) as a table, or ``image`` (the
        plotted matrix) past :data:`MAX_TABLE_CLASSES` classes."""
        counts = _as_array(matrix)
        total, correct = int(counts.sum()), int(np.trace(counts))
        note = (f"<p class='muted'>Rows: true class; columns: predicted class. Each cell: "
                f"images, and their share of the true class. Accuracy "
                f"{escape(percent(correct / total) if total else 'n/a')} "
                f"({correct:,} of {total:,}).</p>")
        if len(classes) > MAX_TABLE_CLASSES:
            body = self.image_tag(image, "confusion matrix") if image is not None else (
                "<p>Too many classes for a table: see <code>confusion_matrix.csv</code>.</p>")
            self.add_section(heading, note + body)
            return
        rows_total = counts.sum(axis=1)
        head = "".join(f"<th class='col' title='{escape(name)}'><span>{escape(name)}</span></th>"
                       for name in classes)
        body = []
        for t, name in enumerate(classes):
            cells = []
            for p in range(len(classes)):
                n = int(counts[t, p])
                share = n / rows_total[t] if rows_total[t] else 0.0
                style = f"background:rgba(37,99,235,{share:.3f});" if n else ""
                if share > 0.55:
                    style += "color:#fff;"
                kind = "diag" if t == p else "off" if n else "zero"
                text = f"{n:,}<small>{escape(whole_percent(share))}</small>" if n else ""
                cells.append(f"<td class='{kind}' style='{style}'>{text}</td>")
            body.append(f"<tr><th class='row' title='{escape(name)}'>{escape(name)}</th>"
                        f"{''.join(cells)}<td class='num total'>{int(rows_total[t]):,}</td></tr>")
        dense = " dense" if len(classes) > 16 else ""  # 30 columns still fit a laptop screen
        table = (f"<div class='scroll'><table class='cm{dense}'><thead><tr><th class='corner'>"
                 f"true \\ predicted</th>{head}<th class='col total'><span>images</span></th>"
                 f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>")
        self.add_section(heading, note + table)

    def add_per_class(self, classes: Sequence[str], report: ClassReport,
                      heading: str = "Per class") -> None:
        """Precision and recall of every class with their 95% intervals, recall drawn as a
        bar, and support; a figure that does not exist (no image of the class, nothing
        predicted as it) reads "n/a"."""
        rows = []
        for i, name in enumerate(classes):
            r, s, n = report.recall[i], report.support[i], report.predicted[i]
            recall = _with_interval(report.recall_interval(i)) if s else "n/a"
            precision = _with_interval(report.precision_interval(i)) if n else (
                escape(percent(0.0)) if s else "n/a")
            rows.append(
                f"<tr><td class='num muted'>{i}</td><th>{escape(name)}</th>"
                f"<td class='num'>{precision}</td><td class='num'>{recall}</td>"
                f"<td class='barcell'><div class='bar'><span style='width:{100 * r:.1f}%'>"
                f"</span></div></td><td class='num'>{int(s):,}</td></tr>")
        self.add_section(heading, "<p class='muted'>Each figure with its 95% interval "
                         "(Wilson): recall out of the class's images, precision out of the "
                         "images predicted as it.</p><div class='scroll'><table "
                         "class='perclass'><thead><tr><th>id</th><th>class</th>"
                         "<th>precision</th><th>recall</th><th></th><th>images</th></tr>"
                         f"</thead><tbody>{''.join(rows)}</tbody></table></div>")

    def add_confused(self, pairs: Sequence[ConfusedPair], classes: Sequence[str],
                     limit: int = 20, heading: str = "Most confused classes") -> None:
        """The most frequent (true -> predicted) mistakes."""
        if not pairs:
            self.add_section(heading, "<p>No image was misclassified.</p>")
            return
        rows = "".join(
            f"<tr><th>{escape(classes[c.true])}</th><td class='arrow'>&rarr;</td>"
            f"<th>{escape(classes[c.predicted])}</th><td class='num'>{c.count:,}</td>"
            f"<td class='num'>{escape(percent(c.share))}</td></tr>" for c in pairs[:limit])
        self.add_section(heading, "<table class='confused'><thead><tr><th>true class</th><th></th>"
                  "<th>predicted as</th><th>images</th><th>share of the true class</th></tr>"
                  f"</thead><tbody>{rows}</tbody></table>")

    def add_gallery(self, errors: Sequence[Prediction], classes: Sequence[str], *,
                    images: Sequence | None = None, heatmaps: Sequence | None = None,
                    limit: int = 24, heading: str = "Top losses") -> None:
        """The worst errors: each image, its class-activation map when given, and a caption.

        ``images`` and ``heatmaps`` are as for :func:`utils.evaluation.mistakes.write_top_losses`
        (default images: the errors' files).  Thumbnails are embedded; the caption links to
        the original file when it exists.
        """
        errors = list(errors)[:limit]
        if not errors:
            self.add_section(heading, "<p>No image was misclassified.</p>")
            return
        sources = [e.path for e in errors] if images is None else list(images)[:len(errors)]
        maps = list(heatmaps)[:len(errors)] if heatmaps is not None else [None] * len(errors)
        tiles = []
        for k, (e, source, heat) in enumerate(zip(errors, sources, maps)):
            picture = thumbnail(source, THUMB, enlarge=True)
            pics = self.image_tag(picture, f"image {k + 1}")
            if heat is not None:
                pics += self.image_tag(overlay(picture, heat), f"activation map {k + 1}")
            link = self._href(e.path)
            name = escape(os.path.basename(e.path))
            file = f"<a href='{link}'>{name}</a>" if link else name
            tiles.append(
                f"<div class='tile'><div class='pics'>{pics}</div><div class='cap'>"
                f"<div><span class='muted'>true</span> <b>{escape(classes[e.true])}</b></div>"
                f"<div><span class='muted'>predicted</span> <b class='bad'>"
                f"{escape(classes[e.predicted])}</b> {escape(percent(e.confidence, 1))}</div>"
                f"<div class='muted small'>loss {e.loss:.3f} &middot; {file}</div>"
                "</div></div>")
        note = "<p class='muted'>Misclassified images, highest loss first."
        if any(heat is not None for heat in maps):
            note += " Right: where the evidence for the predicted class lies (Grad-CAM)."
        note += "</p>"
        self.add_section(heading, note + f"<div class='gallery'>{''.join(tiles)}</div>")

    # ------------------------------------------------------------------ output
    def write(self) -> Path:
        """Write the page (atomically: a temporary file, then a rename); return its path."""
        generated = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        nav = "".join(f"<a href='#{anchor}'>{escape(heading)}</a>"
                      for anchor, heading, _ in self._sections)
        sections = "".join(f"<section id='{anchor}'><h2>{escape(heading)}</h2>{body}</section>"
                           for anchor, heading, body in self._sections)
        subtitle = f"<p class='subtitle'>{escape(self.subtitle)}</p>" if self.subtitle else ""
        scripts = "".join(f"<script>{code}</script>" for code in self._scripts)
        page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<title>{escape(self.title)}</title><style>{_CSS}</style></head><body><main>"
                f"<header><h1>{escape(self.title)}</h1>{subtitle}"
                f"<p class='muted small'>Generated {generated}</p><nav>{nav}</nav></header>"
                f"{sections}</main>{scripts}</body></html>\n")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(page, encoding="utf-8")
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self.path

    def add_section(self, heading: str, body: str, *, at_top: bool = False) -> None:
        """A section of ready HTML (escape user data with :func:`escape`); ``at_top`` puts
        it before the sections added so far (what a reader must see first)."""
        section = (f"s{len(self._sections) + 1}", heading, body)
        if at_top:
            self._sections.insert(0, section)
        else:
            self._sections.append(section)

    def add_script(self, code: str) -> None:
        """Inline JavaScript run by the page (no file, no network: it works from disk)."""
        self._scripts.append(code)

    def image_tag(self, image, alt: str) -> str:
        """An ``<img>`` of a file (relative link, or embedded) or of an in-memory image."""
        if isinstance(image, (str, os.PathLike)):
            src = self._href(image) if not self.embed else _file_data_uri(image)
            if src is None:
                return f"<p class='missing'>missing image: {escape(os.fspath(image))}</p>"
        else:
            src = _data_uri(as_rgb_array(image))
        return f"<img src='{src}' alt='{escape(alt)}' loading='lazy'>"

    def _href(self, target: str | os.PathLike) -> str | None:
        """URL of an existing file relative to the page, or ``None`` if it is not there."""
        target = Path(target)
        if not target.is_file():
            return None
        try:
            relative = os.path.relpath(target.resolve(), self.path.parent.resolve())
        except ValueError:  # another drive (Windows): no relative path exists
            return _file_data_uri(target)
        return escape(quote(Path(relative).as_posix()))


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def percent(fraction: float, digits: int = 2) -> str:
    return f"{100 * fraction:.{digits}f}%"


def _ci_note(ci: Mapping[str, Any] | None) -> str:
    """A card's interval line: ``95% CI 90.2–98.4%, 100 images`` (red when too wide)."""
    if not ci:
        return ""
    text = format_ci(ci["successes"], ci["count"])
    wide = " wide" if ":" in text else ""
    return f"<div class='ci{wide}'>{escape(text)}</div>"


def _with_interval(interval: Interval) -> str:
    """``96.00%`` with ``90.2–98.4`` under it, as table-cell HTML."""
    return (f"{escape(percent(interval.estimate))}<small class='ci'>"
            f"{escape(format_interval(interval))}</small>")


def _name(image) -> str:
    return os.path.basename(image) if isinstance(image, (str, os.PathLike)) else "figure"


def _flatten(settings: Mapping[str, Any], prefix: str = ""):
    for key, value in settings.items():
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(_format_value, value))
    return "—" if value is None or value == "" else str(value)


def _as_array(matrix) -> np.ndarray:
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.cpu().numpy()
    return np.asarray(matrix, dtype=np.int64)


def _data_uri(rgb: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _file_data_uri(path: str | os.PathLike) -> str | None:
    path = Path(path)
    if not path.is_file():
        return None
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_CSS = """
:root { --fg:#1f2933; --muted:#667085; --line:#e4e7ec; --accent:#2563eb; --bad:#b42318;
        --bg:#f5f6f8; --card:#ffffff; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Helvetica Neue",
       Arial,sans-serif; }
main { max-width:1180px; margin:0 auto; padding:28px 28px 64px; }
header h1 { font-size:26px; margin:0 0 2px; letter-spacing:-0.01em; overflow-wrap:anywhere; }
.subtitle { margin:0; font-size:15px; overflow-wrap:anywhere; }
nav { display:flex; flex-wrap:wrap; gap:6px; margin-top:12px; }
nav a { font-size:13px; color:var(--accent); text-decoration:none; background:var(--card);
        border:1px solid var(--line); border-radius:999px; padding:2px 12px; }
section { background:var(--card); border:1px solid var(--line); border-radius:12px;
          padding:18px 22px 20px; margin:18px 0; box-shadow:0 1px 2px rgba(16,24,40,.04); }
h2 { font-size:18px; margin:0 0 12px; }
.muted { color:var(--muted); } .small { font-size:12.5px; }
pre.plan { background:var(--bg); border-radius:8px; padding:10px 14px; font-size:13px;
           overflow-x:auto; white-space:pre-wrap; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:12px; }
.card { border:1px solid var(--line); border-radius:10px; padding:12px 16px; }
.card .value { font-size:28px; font-weight:650; font-variant-numeric:tabular-nums; }
.card .label { color:var(--muted); font-size:13px; }
.card .ci, small.ci { color:var(--muted); font-size:12px; display:block; }
.ci.wide, .bad { color:var(--bad); }
table { border-collapse:collapse; font-size:14px; }
th, td { padding:5px 10px; border-bottom:1px solid var(--line); text-align:left;
         vertical-align:middle; }
th { font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
dl.settings { display:grid; grid-template-columns:repeat(auto-fill,minmax(330px,1fr));
              column-gap:32px; margin:0; }
dl.settings div { display:flex; justify-content:space-between; gap:16px; padding:4px 2px;
                  border-bottom:1px solid var(--line); }
dl.settings dt { color:var(--muted); }
dl.settings dd { margin:0; text-align:right; overflow-wrap:anywhere; font-size:13px;
                 font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace; }
.scroll { overflow-x:auto; }
table.cm td { text-align:center; min-width:44px; height:40px; padding:2px 3px;
              border:1px solid #fff; font-size:13px; line-height:1.1;
              font-variant-numeric:tabular-nums; }
table.cm td small { display:block; font-size:10.5px; opacity:.85; }
table.cm td.diag { outline:1.5px solid rgba(16,24,40,.35); outline-offset:-2px; }
table.cm td.zero { background:#fafbfc; }
table.cm th.row { max-width:180px; overflow:hidden; text-overflow:ellipsis; white-space:nowrap;
                  font-weight:500; border:none; text-align:right; }
table.cm th.col { vertical-align:bottom; padding:4px 2px; border:none; font-weight:500; }
table.cm th.col span { writing-mode:vertical-rl; transform:rotate(180deg); white-space:nowrap;
                       display:inline-block; max-height:150px; overflow:hidden;
                       text-overflow:ellipsis; }
table.cm th.corner { font-size:12px; color:var(--muted); font-weight:400; border:none;
                     vertical-align:bottom; text-align:right; }
table.cm td.total { color:var(--muted); border:none; background:none; }
table.cm.dense td { min-width:30px; height:34px; font-size:11px; padding:1px; }
table.cm.dense td small { font-size:9px; }
table.cm.dense th.row { max-width:140px; font-size:13px; }
td.barcell { width:180px; }
.bar { background:#e8eefc; height:8px; border-radius:4px; overflow:hidden; }
.bar span { display:block; height:100%; background:var(--accent); }
td.arrow { color:var(--muted); padding:5px 2px; }
.figures { display:grid; grid-template-columns:repeat(auto-fit,minmax(420px,1fr)); gap:16px; }
figure { margin:0; }
figure img { width:100%; height:auto; border:1px solid var(--line); border-radius:8px; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
.gallery { display:grid; grid-template-columns:repeat(auto-fill,minmax(260px,1fr)); gap:14px; }
.tile { border:1px solid var(--line); border-radius:10px; overflow:hidden; }
.tile .pics { display:flex; background:#111; }
.tile .pics img { flex:1 1 0; min-width:0; aspect-ratio:1; object-fit:contain; }
.tile .cap { padding:8px 12px 10px; font-size:13.5px; overflow-wrap:anywhere; }
.tile a { color:var(--accent); }
.missing { color:var(--bad); font-size:13px; }
"""
