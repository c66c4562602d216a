"""The review section of a training run's ``report.html``: suspected label errors, ticked by
a person, turned into a ``relabel.csv`` download -- plain HTML and JavaScript, no server,
works from ``file://``.

Each suspect (a ``label_issues.csv`` row, :mod:`utils.train.margins`) shows its thumbnail
beside an example of the class it was given and of the class suggested, all embedded as
``data:`` URIs.  A tick selects it; its menu picks the new class (the suggested one first)
or removal.  "Download relabel.csv" builds the file in the browser with the columns
``path,class`` that ``txt_annotation.py --apply`` reads.
"""
from __future__ import annotations

import json
import math
from typing import Callable, Mapping, Sequence

from utils.data.relabel import REMOVED
from utils.evaluation.mistakes import thumbnail
from utils.evaluation.report import Report, escape

#: Suspects shown (``label_issues.csv`` lists them all).
SHOWN = 30
#: Side (px) of the thumbnails.
THUMB = 96
#: The section's element id, which the script and the tests find it by.
SECTION_ID = "label-review"


def class_examples(samples: Sequence[tuple[int, str]], classes: Sequence[str],
                   scores: Sequence[float]) -> dict[str, str]:
    """One example image path per class: its most confidently learnt training image (the
    highest score, the area under the margin)."""
    best: dict[str, tuple[float, str]] = {}
    for (label, path), score in zip(samples, scores):
        name = classes[label]
        if not math.isnan(score) and (name not in best or score > best[name][0]):
            best[name] = (score, path)
    return {name: path for name, (_, path) in best.items()}


def add_label_review(page: Report, rows: Sequence[Mapping], classes: Sequence[str],
                     examples: Mapping[str, str], shown_path: Callable[[str], str],
                     epochs: int) -> None:
    """Add the review section of the first :data:`SHOWN` of ``rows`` (``label_issues.csv``'s,
    most suspect first) to ``page``.

    ``examples`` maps a class to an example image (:func:`class_examples`);
    ``shown_path`` turns a row's path into the one ``relabel.csv`` names (as the annotation
    files do); ``epochs`` is how long the run trained (the ranking is only as good as it).
    """
    heading = "Suspected label errors (training set)"
    if not rows:
        page.add_section(heading, "<p>No training image stood out: every image's given class "
                                  "won on average over the run.</p>")
        return
    tags = {name: page.image_tag(thumbnail(path, THUMB, enlarge=True), f"{name} example")
            for name, path in examples.items()}
    options = "".join(f"<option value='{escape(c)}'>{escape(c)}</option>" for c in classes)
    options += f"<option value='{REMOVED}'>remove from the dataset</option>"
    body = []
    for row in list(rows)[:SHOWN]:
        path, given, suggested = shown_path(str(row["path"])), row["given"], row["suggested"]
        body.append(
            f"<tr data-path='{escape(path)}' data-suggested='{escape(suggested)}'>"
            f"<td><input type='checkbox' class='pick' aria-label='relabel {escape(path)}'></td>"
            f"<td class='num'>{int(row['rank'])}</td>"
            f"<td>{page.image_tag(thumbnail(row['path'], THUMB, enlarge=True), 'suspect')}"
            f"<div class='small muted'>{escape(path)}</div></td>"
            f"<td>{tags.get(given, '')}<div>given <b>{escape(given)}</b></div></td>"
            f"<td>{tags.get(suggested, '')}<div>suggested <b>{escape(suggested)}</b></div></td>"
            f"<td><select class='choice'>{options}</select></td>"
            f"<td class='num'>{float(row['score']):.3f}</td></tr>")
    note = (f"<p class='muted'>The {min(len(rows), SHOWN)} training images (of {len(rows)} in "
            "<code>label_issues.csv</code>) the model kept disagreeing with over the "
            f"run's {epochs} epoch(s), most suspect first. Score: the area under the margin, "
            "the given class's logit minus the best other one, averaged over training; below "
            "0, another class won on average. The ranking is only as good as the run: a short "
            "or under-trained one flags hard images too. Tick the wrong ones, pick their class "
            "(or removal), download <code>relabel.csv</code> and run <code>python "
            "txt_annotation.py --apply relabel.csv</code>; <code>--undo</code> puts "
            "everything back.</p>")
    # Thumbnails keep their box while they load (lazily): rows never shift under a click.
    style = (f"<style>#{SECTION_ID} img {{ width:{THUMB}px; height:{THUMB}px; "
             "object-fit:contain; }}</style>")
    page.add_section(heading, f"<div id='{SECTION_ID}'>{style}{note}<div class='scroll'>"
                     "<table class='review'><thead><tr><th></th><th>#</th><th>image</th>"
                     "<th>given class (example)</th><th>suggested class (example)</th>"
                     "<th>new class</th><th>score</th></tr></thead>"
                     f"<tbody>{''.join(body)}</tbody></table></div><p><button type='button' "
                     "id='relabel-download' disabled>Download relabel.csv</button> "
                     "<span id='relabel-count' class='muted'>0 selected</span></p></div>")
    page.add_script(_SCRIPT % json.dumps(SECTION_ID))


#: The section's behaviour.  Cells are written as the project's CSV writer writes them:
#: quoted when needed (RFC 4180), and a leading ' before what a spreadsheet would run as a
#: formula (utils.fileio.spreadsheet_safe; --apply reads it back).
_SCRIPT = """(function () {
  var section = document.getElementById(%s);
  if (!section) return;
  var rows = Array.prototype.slice.call(section.querySelectorAll("tbody tr"));
  var button = document.getElementById("relabel-download");
  var count = document.getElementById("relabel-count");
  function picked() {
    return rows.filter(function (row) { return row.querySelector(".pick").checked; });
  }
  function update() {
    var n = picked().length;
    count.textContent = n + " selected";
    button.disabled = n === 0;
  }
  rows.forEach(function (row) {
    var choice = row.querySelector(".choice");
    choice.value = row.dataset.suggested;
    row.querySelector(".pick").addEventListener("change", update);
    choice.addEventListener("change", function () {
      row.querySelector(".pick").checked = true;  // choosing a class selects the image
      update();
    });
  });
  function cell(text) {
    if (/^[=+\\-@\\t\\r]/.test(text)) text = "'" + text;
    return /[",\\r\\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }
  button.addEventListener("click", function () {
    var lines = ["path,class"];
    picked().forEach(function (row) {
      lines.push(cell(row.dataset.path) + "," + cell(row.querySelector(".choice").value));
    });
    var link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([lines.join("\\r\\n") + "\\r\\n"],
                                             {type: "text/csv"}));
    link.download = "relabel.csv";
    document.body.appendChild(link);
    link.click();
    setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 0);
  });
  update();
})();"""
