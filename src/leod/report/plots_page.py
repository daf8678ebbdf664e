"""The HTML page template of ``dvc plots show`` with Vega, Vega-Lite and Vega-Embed inline.

DVC's own page loads the three libraries from a CDN, so without internet the page is blank.
This template carries them instead, taken from the ``vl-convert-python`` package (a project
requirement, BSD-3-Clause; the three libraries are BSD-3-Clause, their d3 parts ISC):
``.dvc/config`` points ``plots.html_template`` at the copy the report stage writes. DVC fills
``{plot_divs}``; ``{scripts}``, where it would put its CDN tags, is left out on purpose.
"""

from __future__ import annotations

import os
from importlib.metadata import version

import vl_convert

from leod.plumbing.atomic import write_text

#: file name of the page template in the report folder (``.dvc/config`` names it)
PAGE_NAME = "plots_page.html"
#: DVC's placeholder for the charts; a template without it is refused by ``dvc plots``.
PLOTS_PLACEHOLDER = "{plot_divs}"

_PAGE = """<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  <title>leod plots</title>
  {refresh_tag}
  <!-- vega {vega}, vega-lite {vega_lite}, vega-embed {vega_embed}, from vl-convert-python {vl_convert};
       BSD-3-Clause, copyright the University of Washington Interactive Data Lab; d3 modules ISC -->
  <script>{bundle}</script>
  <style>
    body {{ font-family: sans-serif; margin: 16px; }}
    body > div {{ display: inline-block; vertical-align: top; margin: 0 24px 24px 0; }}
  </style>
</head>
<body>
  {plots}
</body>
</html>
"""


def plots_page() -> str:
    """The page template, with the bundled libraries and DVC's placeholders."""
    bundle = vl_convert.javascript_bundle()
    if PLOTS_PLACEHOLDER in bundle:  # DVC would paste the charts into the script
        raise RuntimeError(f"the Vega bundle contains DVC's placeholder {PLOTS_PLACEHOLDER}")
    return _PAGE.format(
        refresh_tag="{refresh_tag}",
        vega=vl_convert.get_vega_version(),
        vega_lite=vl_convert.get_vegalite_versions()[-1],
        vega_embed=vl_convert.get_vega_embed_version(),
        vl_convert=version("vl-convert-python"),
        bundle=bundle.replace("</script", "<\\/script"),
        plots=PLOTS_PLACEHOLDER,
    )


def write_plots_page(path: str | os.PathLike[str]) -> None:
    """Write the page template atomically (``reports/plots_page.html`` in the pipeline)."""
    write_text(path, plots_page())
