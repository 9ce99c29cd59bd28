"""The Streamlit helpers every page shares; the only Streamlit code outside ``pages/``.

One concern a module:

* :mod:`.state`: the session-state registry (every shared key, typed accessors, widgets kept across pages);
* :mod:`.sources`: where the weights come from (:class:`~.sources.ModelSource`) and :func:`~.sources.get_model`;
* :mod:`.run`: the current forward pass (:class:`~.run.Run` and its :class:`~.run.RunKey`), and
  :func:`~.run.cached`, the one way a page caches what it derives from the run;
* :mod:`.pictures`: the samples, the upload and what the sidebar says about the picture;
* :mod:`.sidebar`: the shared sidebar that every page draws first;
* :mod:`.parts`: the parts pages are built from, and the scaffold every page opens and closes with
  (:func:`~.parts.open_page`, :func:`~.parts.close_page`);
* :mod:`.navigation`: the pages in teaching order, the page config, page-wide styles;
* :mod:`.server`: process settings for a shared server, called once from ``app.py`` (importing this
  package changes nothing in the process).
"""

from __future__ import annotations

# Fully imported before any session runs: plotly peeks at sys.modules['pandas'] without waiting for an
# import in progress, so concurrent first page loads crashed with "partially initialized module 'pandas'".
import pandas  # noqa: F401

from .navigation import FAVICON, PAGE_CONFIG, PAGES
from .parts import (
    download_trace,
    einops_expression,
    finish_link,
    fixed_attention_scale,
    lazy_section,
    model_knowledge,
    next_stage,
    close_page,
    open_page,
    plot,
    shapes,
    show_source,
    source_key,
    stage_header,
)
from .pictures import DEFAULT_SAMPLE, Picture, sample_names
from .run import Run, RunKey, cached, cached_with_progress, core_trace, stored, trace_download, trace_npz, trace_readme
from .sidebar import IMAGE_SIZES, load_base, preset_sidebar, sidebar
from .sources import (
    BUNDLED,
    BUNDLED_MODELS,
    LOCAL,
    RANDOM,
    SESSION,
    ModelSource,
    add_session_model,
    bundled_name,
    classroom_mode,
    config_key,
    get_model,
)
from .state import UPLOAD, clamp_index, one_of, patch_on_grid, remember, store_clicked_patch

__all__ = [
    "BUNDLED", "BUNDLED_MODELS", "DEFAULT_SAMPLE", "FAVICON", "IMAGE_SIZES", "LOCAL", "PAGES", "PAGE_CONFIG",
    "RANDOM", "SESSION", "UPLOAD", "ModelSource", "Picture", "Run", "RunKey", "add_session_model", "bundled_name",
    "cached", "cached_with_progress", "clamp_index", "classroom_mode", "config_key", "core_trace", "download_trace",
    "einops_expression", "finish_link", "fixed_attention_scale", "get_model", "lazy_section", "load_base", "model_knowledge",
    "next_stage", "one_of", "open_page", "close_page", "patch_on_grid", "plot", "preset_sidebar", "remember", "sample_names", "shapes",
    "show_source", "source_key", "stage_header", "store_clicked_patch", "stored", "trace_download", "trace_npz",
    "trace_readme",
]
