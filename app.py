"""vit-explain: run a real Vision Transformer on your picture and look at every tensor it makes.

How the pages fit together (decided once, here):
The stage pages live in ``pages/`` as the product brief asks, and this entry point lists them with
``st.navigation`` (titles, icons, teaching order from ``vit_explain.ui.PAGES``). The sidebar is
NOT drawn here: each page opens with ``ui.open_page(...)``, which draws the one shared sidebar, and
closes with ``ui.close_page(...)``. Two reasons: Streamlit's AppTest runs a page file on its own when it
switches to a page in a folder named ``pages/`` (it skips this entry point), so a sidebar drawn here
would vanish from the tests; and a page that builds its own sidebar reads top to bottom as what the
user sees. The sidebar's widgets keep their values across pages with Streamlit's
``persist_state="session"`` (see ``vit_explain/ui/state.py``), and the picture in use (a sample or the
session's upload) lives in the session state, never in the upload box: Streamlit gives every page's
widgets their own identity, so each page draws a fresh, empty upload box. Every choice survives page
switches in the browser and in AppTest alike.
"""

import streamlit as st

from vit_explain.ui import PAGE_CONFIG, PAGES
from vit_explain.ui.server import tune_server

tune_server()  # once per process: a server that many sessions share (see vit_explain/ui/server.py)
st.set_page_config(**PAGE_CONFIG)
st.navigation([st.Page(path, title=title, icon=icon, default=(i == 0)) for i, (path, title, icon) in enumerate(PAGES)]).run()
