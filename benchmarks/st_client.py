"""A Streamlit client that speaks the app's own protocol, the way the browser's front end does.

One object is one browser tab: it loads the page over HTTP (cookies included, so a load balancer's
affinity cookie and Streamlit's XSRF cookie work as in a browser), opens the websocket at
``/_stcore/stream`` and exchanges the ``BackMsg`` / ``ForwardMsg`` protobufs that the installed
``streamlit`` package defines. It keeps what the front end keeps: the widgets of the current page
with their values (every rerun sends them all), the message cache (``cached_message_hashes``), the
pages of the navigation. It uploads files the front end's way: a ``file_urls_request`` over the
websocket, a multipart ``PUT`` to ``/_stcore/upload_file/<session>/<file>`` with the XSRF header, then
a rerun carrying the uploader's ``FileUploaderState``. It fetches the ``/media/...`` files a page shows.

Every interaction (:meth:`open`, :meth:`switch_page`, :meth:`set_widget`, :meth:`upload`,
:meth:`click_patch`) returns an :class:`Interaction`: the seconds from the message sent to the
``script_finished`` message of that run, and a fingerprint of what the run put on screen (every
element and block in order, spinners and empty placeholders left out: they depend on the cache and
on timing, not on the session's data), which the load test compares with the same student's
single-user run.

Synchronous on purpose (``websocket-client`` and ``requests``): under Locust, gevent makes their
sockets cooperative, so one process drives dozens of students on one core.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
import websocket
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.Common_pb2 import FileURLs, UploadedFileInfo
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

XSRF_COOKIE = "_streamlit_xsrf"
FINISHED = ForwardMsg.ScriptFinishedStatus
DONE = {FINISHED.FINISHED_SUCCESSFULLY, FINISHED.FINISHED_FRAGMENT_RUN_SUCCESSFULLY}
#: Elements left out of a fingerprint: placeholders and progress shown while a cache fills (they
#: appear or not depending on the cache and on timing, never on the session's own data).
TRANSIENT = {"empty", "spinner", "skeleton", "progress", "toast", "balloons", "snow"}
#: Where a widget's value goes in a WidgetState (Streamlit 1.67, elements/widgets/*.py value_type).
VALUE_FIELD = {
    "select_slider": "string_array_value", "slider": "double_array_value", "selectbox": "string_value",
    "radio": "string_value", "checkbox": "bool_value", "number_input": "double_value",
    "text_input": "string_value", "button_group": "string_array_value", "plotly_chart": "string_value",
    "file_uploader": "file_uploader_state_value", "button": "trigger_value",
}
#: How many script runs the front end keeps a cached message (Streamlit's global.maxCachedMessageAge).
MAX_CACHED_AGE = 2


class ProtocolError(RuntimeError):
    """The server answered something a browser would show as an error (or did not answer in time)."""


@dataclass
class Widget:
    id: str
    kind: str  # the Element oneof name: "select_slider", "plotly_chart", ...
    label: str
    options: list[str]
    fragment_id: str
    root: int = 0  # 0: the main area, 1: the sidebar
    range: tuple[float, float, float] | None = None  # numeric sliders: (min, max, step)
    clickable: bool = False  # plotly charts with on_select
    disabled: bool = False
    current: str = ""  # select_slider/selectbox: the option shown when it was drawn


@dataclass
class Interaction:
    kind: str
    seconds: float  # message sent -> script_finished
    fingerprint: str
    elements: int
    exceptions: list[str] = field(default_factory=list)
    media: int = 0  # /media files fetched for this run


def _delta_fingerprint_part(delta) -> bytes | None:
    which = delta.WhichOneof("type")
    if which == "new_element":
        kind = delta.new_element.WhichOneof("type")
        if kind in TRANSIENT:
            return None
        element = delta.new_element
        if kind == "download_button" and element.download_button.deferred_file_id:
            element = type(element)()  # a fresh random id per run, on purpose: not the session's data
            element.CopyFrom(delta.new_element)
            element.download_button.deferred_file_id = ""
        elif kind == "plotly_chart":
            # the same figure, fresh or out of st.cache_data, can list its layout's keys in another order
            # and carry empty settings ("title": {}) or not (its element id hashes that text): compare what
            # it draws, with the keys sorted and the empty settings left out
            element = type(element)()
            element.CopyFrom(delta.new_element)
            element.plotly_chart.id = ""
            try:
                spec = _without_empty(json.loads(element.plotly_chart.spec))
                element.plotly_chart.spec = json.dumps(spec, sort_keys=True)
            except ValueError:
                pass
        return kind.encode() + b":" + element.SerializeToString(deterministic=True)
    if which == "add_block":
        return b"block:" + delta.add_block.SerializeToString(deterministic=True)
    return None


def _without_empty(value):
    """``value`` (parsed JSON) with every empty object left out of the objects that hold it."""
    if isinstance(value, dict):
        kept = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v != {}}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


def _current(inner, options: list) -> str:
    """The option a select_slider or selectbox shows (its value if set, else its default index)."""
    if not options:
        return ""
    raw = [str(v) for v in getattr(inner, "raw_value", [])]  # a value set through st.session_state
    if raw and raw[0] in [str(o) for o in options]:
        return raw[0]
    for name in ("value", "default"):
        values = getattr(inner, name, None)
        try:
            values = list(values) if values is not None else []
        except TypeError:
            values = [values]
        if values and isinstance(values[0], (int, float)) and 0 <= int(values[0]) < len(options):
            return str(options[int(values[0])])
    return ""


def _user_key(widget_id: str) -> str:
    """The user key in a widget id ``$$ID-<hash>-<key>`` (the whole id when there is none)."""
    parts = widget_id.split("-", 2)
    return parts[2] if len(parts) == 3 and parts[0] == "$$ID" else widget_id


class StreamlitSession:
    """One browser tab talking to a Streamlit server (see the module docstring)."""

    def __init__(self, base_url: str, timeout: float = 120.0, fetch_media: bool = True, fetch_assets: bool = True,
                 name: str = ""):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.fetch_media = fetch_media
        self.fetch_assets = fetch_assets
        self.asset_bytes = 0
        self.name = name
        self.http = requests.Session()
        self.ws: websocket.WebSocket | None = None
        self.session_id = ""
        self.pages: dict[str, str] = {}  # url_pathname ("" for the default page) -> page_script_hash
        self.page = ""  # url_pathname of the current page
        self.page_hash = ""
        self.widgets: dict[str, Widget] = {}  # id -> widget, drawn by the last full run (and fragments since)
        self.values: dict[str, WidgetState] = {}  # id -> the value the front end holds
        self.cache: dict[str, tuple[ForwardMsg, int]] = {}  # message hash -> (message, run counter)
        self.runs = 0
        self.media_seen: set[str] = set()
        self.upstreams: set[str] = set()  # X-Upstream of every HTTP answer (set by the deploy/ nginx config)
        self.http_errors: list[str] = []
        self.metrics: dict[str, str] = {}  # label -> value of the st.metric elements seen last

    # ------------------------------------------------------------------ HTTP
    def _get(self, path: str) -> requests.Response:
        response = self.http.get(self.base_url + path, timeout=self.timeout)
        self._note_upstream(response)
        return response

    def _note_upstream(self, response: requests.Response) -> None:
        upstream = response.headers.get("X-Upstream")
        if upstream:
            self.upstreams.add(upstream)

    # ------------------------------------------------------------------ connect
    def open(self, page: str = "") -> Interaction:
        """Load the page and its front end, connect the websocket and run the script once.

        Timed like every interaction from the first message on the websocket; the HTML, the front end's
        scripts (those index.html names and the Plotly chunk: about 7 MB that a browser fetches once,
        then caches) and Streamlit's health and host-config requests come first, as in a browser.
        """
        index = self._get(f"/{page}")
        if index.status_code != 200:
            raise ProtocolError(f"GET /{page}: HTTP {index.status_code}")
        if self.fetch_assets:
            self.asset_bytes += self._fetch_front_end(index.text)
        for path in ("/_stcore/health", "/_stcore/host-config"):
            response = self._get(path)
            if response.status_code != 200:
                raise ProtocolError(f"GET {path}: HTTP {response.status_code}")
        xsrf = self.http.cookies.get(XSRF_COOKIE, "")
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        cookie = "; ".join(f"{c.name}={c.value}" for c in self.http.cookies)
        self.ws = websocket.create_connection(
            f"{scheme}://{parts.netloc}{parts.path}/_stcore/stream", timeout=self.timeout,
            subprotocols=["streamlit", xsrf] if xsrf else ["streamlit"], cookie=cookie or None,
            origin=f"{parts.scheme}://{parts.netloc}",
        )
        upstream = (self.ws.getheaders() or {}).get("x-upstream")
        if upstream:
            self.upstreams.add(upstream)
        return self._rerun("open", page_name=page)

    def _fetch_front_end(self, html: str) -> int:
        """GET the scripts, styles and fonts index.html names, and the Plotly chunk; return the bytes read."""
        paths = list(dict.fromkeys(re.findall(r'(?:src|href)="\./(static/[^"]+)"', html)))
        main = next((p for p in paths if re.search(r"static/js/index\.[^/]+\.js$", p)), None)
        total = 0
        for path in paths:
            response = self._get("/" + path)
            if response.status_code != 200:
                raise ProtocolError(f"GET /{path}: HTTP {response.status_code}")
            total += len(response.content)
            if path == main:
                plotly = re.search(r"PlotlyChart\.[\w-]+\.js", response.text)
                if plotly:
                    paths.append(f"static/js/{plotly.group(0)}")
        return total

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:
                pass
            self.ws = None
        self.http.close()

    # ------------------------------------------------------------------ interactions
    def switch_page(self, url_pathname: str) -> Interaction:
        """Click a page in the navigation (the front end sends the page's script hash)."""
        if url_pathname not in self.pages:
            raise ProtocolError(f"no page {url_pathname!r} in the navigation ({sorted(self.pages)})")
        return self._rerun("page", page_hash=self.pages[url_pathname])

    def widget(self, key: str) -> Widget:
        """The widget with user key ``key`` on the current page (Streamlit ids end with ``-<key>``)."""
        for widget in self.widgets.values():
            if _user_key(widget.id) == key:
                return widget
        raise ProtocolError(f"no widget with key {key!r} on page {self.page!r}")

    def set_widget(self, key: str, value, kind: str = "widget") -> Interaction:
        """Give widget ``key`` a new value (as the user moving it would) and wait for the rerun."""
        widget = self.widget(key)
        state = WidgetState(id=widget.id)
        slot = VALUE_FIELD.get(widget.kind)
        if widget.kind == "slider" and widget.options:  # a select_slider: the Slider proto with options
            slot = "string_array_value"
        if slot is None:
            raise ProtocolError(f"widget kind {widget.kind!r} is not supported by this client")
        if slot == "string_array_value":
            state.string_array_value.data.extend([str(v) for v in (value if isinstance(value, list) else [value])])
        elif slot == "double_array_value":
            state.double_array_value.data.extend([float(v) for v in (value if isinstance(value, list) else [value])])
        elif slot == "file_uploader_state_value":
            state.file_uploader_state_value.CopyFrom(value)
        else:
            setattr(state, slot, value)
        self.values[widget.id] = state
        return self._rerun(kind, fragment_id=widget.fragment_id)

    def click(self, key: str, kind: str = "button") -> Interaction:
        """Press button ``key`` (its on_click runs in the rerun; like the front end, the press is sent once)."""
        widget = self.widget(key)
        if widget.kind != "button":
            raise ProtocolError(f"widget {key!r} is a {widget.kind}, not a button")
        if widget.disabled:
            raise ProtocolError(f"button {key!r} is disabled")
        return self.set_widget(key, True, kind=kind)

    def click_patch(self, key: str, patch: int) -> Interaction:
        """Click patch ``patch`` on the clickable picture ``key`` (a plotly_chart with on_select)."""
        point = {"curve_number": 1, "point_number": patch, "point_index": patch, "customdata": patch}
        selection = {"selection": {"points": [point], "point_indices": [patch], "box": [], "lasso": []}}
        return self.set_widget(key, json.dumps(selection), kind="click")

    def upload(self, key: str, name: str, data: bytes, content_type: str = "image/png") -> Interaction:
        """Drop a file on the file_uploader ``key``: ask for URLs, PUT the file, rerun with its state."""
        widget = self.widget(key)
        start = time.perf_counter()
        request_id = uuid.uuid4().hex
        back = BackMsg()
        back.file_urls_request.request_id = request_id
        back.file_urls_request.session_id = self.session_id
        back.file_urls_request.file_names.append(name)
        self._send(back)
        urls = None
        deadline = time.monotonic() + self.timeout
        while urls is None:
            msg = self._receive(deadline)
            if msg.WhichOneof("type") == "file_urls_response" and msg.file_urls_response.response_id == request_id:
                if msg.file_urls_response.error_msg:
                    raise ProtocolError(f"upload refused: {msg.file_urls_response.error_msg}")
                urls = msg.file_urls_response.file_urls[0]
        response = self.http.put(
            self.base_url + urls.upload_url, files={"UploadedFile": (name, data, content_type)},
            headers={"X-Xsrftoken": self.http.cookies.get(XSRF_COOKIE, "")}, timeout=self.timeout,
        )
        self._note_upstream(response)
        if response.status_code not in (200, 204):
            raise ProtocolError(f"PUT {urls.upload_url}: HTTP {response.status_code} {response.text[:200]}")
        state = WidgetState(id=widget.id)
        state.file_uploader_state_value.uploaded_file_info.append(UploadedFileInfo(
            name=name, size=len(data), file_id=urls.file_id,
            file_urls=FileURLs(file_id=urls.file_id, upload_url=urls.upload_url, delete_url=urls.delete_url)))
        self.values[widget.id] = state
        return self._rerun("upload", fragment_id=widget.fragment_id, start=start)

    # ------------------------------------------------------------------ the protocol
    def _send(self, back: BackMsg) -> None:
        if self.ws is None:
            raise ProtocolError("not connected")
        self.ws.send_binary(back.SerializeToString())

    def _receive(self, deadline: float) -> ForwardMsg:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ProtocolError(f"no answer within {self.timeout:.0f} s")
        self.ws.settimeout(left)
        try:
            data = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            raise ProtocolError(f"no answer within {self.timeout:.0f} s") from None
        except websocket.WebSocketConnectionClosedException:
            raise ProtocolError("the server closed the websocket") from None
        msg = ForwardMsg()
        msg.ParseFromString(data)
        if msg.WhichOneof("type") == "ref_hash":  # the server trusts our cache: use the stored copy
            cached = self.cache.get(msg.ref_hash)
            if cached is None:
                raise ProtocolError(f"the server referred to message {msg.ref_hash}, which this client never had")
            full = ForwardMsg()
            full.CopyFrom(cached[0])
            full.metadata.CopyFrom(msg.metadata)
            self.cache[msg.ref_hash] = (cached[0], self.runs)
            return full
        if msg.metadata.cacheable and msg.hash:
            self.cache[msg.hash] = (msg, self.runs)
        return msg

    def _client_state(self, page_hash: str | None, page_name: str, fragment_id: str) -> ClientState:
        state = ClientState()
        state.page_script_hash = self.page_hash if page_hash is None else page_hash
        state.page_name = page_name
        state.fragment_id = fragment_id
        state.widget_states.widgets.extend(self.values.values())
        state.cached_message_hashes.extend(self.cache)
        state.context_info.timezone = "UTC"
        state.context_info.locale = "en-US"
        state.context_info.url = f"{self.base_url}/{self.page}"
        return state

    def _rerun(self, kind: str, page_hash: str | None = None, page_name: str = "", fragment_id: str = "",
               start: float | None = None) -> Interaction:
        back = BackMsg()
        back.rerun_script.CopyFrom(self._client_state(page_hash, page_name, fragment_id))
        if start is None:
            start = time.perf_counter()
        self._send(back)
        # a trigger (a button press) counts for one run only, as in the front end
        self.values = {k: v for k, v in self.values.items() if v.WhichOneof("value") != "trigger_value"}
        deadline = time.monotonic() + self.timeout
        elements: dict[tuple, bytes] = {}
        drawn: dict[str, Widget] = {}
        exceptions: list[str] = []
        media: list[str] = []
        while True:
            msg = self._receive(deadline)
            which = msg.WhichOneof("type")
            if which == "new_session":
                if msg.new_session.initialize.session_id:
                    self.session_id = msg.new_session.initialize.session_id
                elements.clear()
                drawn.clear()
                exceptions.clear()
                media.clear()
            elif which == "navigation":
                self.pages = {p.url_pathname: p.page_script_hash for p in msg.navigation.app_pages}
                self.page_hash = msg.navigation.page_script_hash
                self.page = next((p.url_pathname for p in msg.navigation.app_pages
                                  if p.page_script_hash == self.page_hash), self.page)
            elif which == "page_not_found":
                raise ProtocolError(f"page not found: {msg.page_not_found.page_name!r}")
            elif which == "delta":
                path = tuple(msg.metadata.delta_path)
                part = _delta_fingerprint_part(msg.delta)
                if part is None:
                    elements.pop(path, None)
                else:
                    elements[path] = part
                if msg.delta.WhichOneof("type") == "new_element":
                    element = msg.delta.new_element
                    kind_ = element.WhichOneof("type")
                    if kind_ == "exception":
                        exceptions.append(f"{element.exception.type}: {element.exception.message}"[:300])
                    elif kind_ == "alert" and element.alert.format == element.alert.ERROR:
                        exceptions.append(f"error box: {element.alert.body}"[:300])
                    elif kind_ == "imgs":
                        media.extend(img.url for img in element.imgs.imgs if img.url.startswith("/media/"))
                    inner = getattr(element, kind_) if kind_ else None
                    widget_id = getattr(inner, "id", "") if inner is not None else ""
                    if widget_id and kind_ in VALUE_FIELD:
                        options = [getattr(o, "content", o) for o in getattr(inner, "options", [])]
                        numeric = kind_ == "slider" and not options
                        drawn[widget_id] = Widget(
                            widget_id, kind_, getattr(inner, "label", ""), [str(o) for o in options],
                            msg.delta.fragment_id, root=path[0] if path else 0,
                            range=(inner.min, inner.max, inner.step) if numeric else None,
                            clickable=kind_ == "plotly_chart" and len(inner.selection_mode) > 0,
                            disabled=bool(getattr(inner, "disabled", False)), current=_current(inner, options))
                    elif kind_ == "metric":
                        self.metrics[element.metric.label] = element.metric.body
            elif which == "script_finished":
                status = msg.script_finished
                if status == FINISHED.FINISHED_EARLY_FOR_RERUN:
                    continue  # the app asked for another run (st.rerun): the next one counts
                if status == FINISHED.FINISHED_WITH_COMPILE_ERROR:
                    raise ProtocolError("the script failed to compile")
                if status in DONE:
                    break
        seconds = time.perf_counter() - start
        self._after_run(drawn, fragment=bool(fragment_id))
        digest = hashlib.sha256()
        for path in sorted(elements):
            digest.update(repr(path[:1]).encode() + elements[path])
        fetched = self._fetch_media(media) if self.fetch_media else 0
        return Interaction(kind, seconds, digest.hexdigest()[:16], len(elements), exceptions, fetched)

    def _after_run(self, drawn: dict[str, Widget], fragment: bool) -> None:
        """Keep what the front end keeps after a run: the widgets on screen, the fresh cache entries."""
        if fragment:  # a redrawn widget may have a new id (plotly charts: the id hashes the figure)
            keys = {_user_key(i) for i in drawn}
            self.widgets = {i: w for i, w in self.widgets.items() if _user_key(i) not in keys}
            self.widgets.update(drawn)
        else:
            self.widgets = drawn
            self.runs += 1
        self.values = {k: v for k, v in self.values.items() if k in self.widgets}
        if not fragment:
            self.cache = {h: (m, n) for h, (m, n) in self.cache.items() if self.runs - n <= MAX_CACHED_AGE}

    def _fetch_media(self, urls: list[str]) -> int:
        fetched = 0
        for url in urls:
            if url in self.media_seen:
                continue  # the browser's cache has it
            response = self._get(url)
            if response.status_code != 200:
                self.http_errors.append(f"GET {url}: HTTP {response.status_code}")
                raise ProtocolError(f"GET {url}: HTTP {response.status_code}")
            self.media_seen.add(url)
            fetched += 1
        return fetched
