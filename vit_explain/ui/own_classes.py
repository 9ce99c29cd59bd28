"""The Training page's "your own classes" editor: name the classes, fill them from uploads, a zip or the webcam.

Every picture is untrusted: uploads are checked against :data:`vit_explain.picture_archive.CAPS`
(classes, pictures per class and in all, bytes in all), a zip is read in memory by
:func:`~vit_explain.picture_archive.read_zip`, and every picture is decoded by
:func:`~vit_explain.imagefile.load_image` (through :func:`~vit_explain.picture_archive.picture_to_array`).
The decoded pictures (32 x 32, 3 KB each) live in this browser session's state only and go with it.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from ..imagefile import InvalidImageError
from ..picture_archive import CAPS, PICTURE_EXTENSIONS, ArchiveError, human_bytes, picture_to_array, read_zip
from ..training.own_classes import OWN_IMAGE_SIZE, check_classes, held_out_count

__all__ = ["class_editor", "confusion_figure", "limits_sentence"]

HOW = {"files": "Upload pictures class by class (or take them with the webcam)",
       "zip": "One .zip with a folder per class"}
DEFAULT_NAMES = ("", "", "")


def limits_sentence() -> str:
    c = CAPS
    return (f"{c.min_classes} to {c.max_classes} classes, at least {c.min_per_class} and at most {c.max_per_class} "
            f"pictures per class, {c.max_pictures} pictures and {human_bytes(c.max_total_bytes)} in all, "
            f"{human_bytes(c.max_file_bytes)} per picture ({', '.join(e[1:] for e in PICTURE_EXTENSIONS)}). "
            f"Your pictures stay in this browser session only (shrunk to {OWN_IMAGE_SIZE} x {OWN_IMAGE_SIZE}) and are "
            f"gone when it ends; nothing is written to the server's disk.")


def _decoded(key: str, data) -> np.ndarray | str:
    """A picture decoded once per session (by upload id): the array, or why it was refused."""
    cache = st.session_state.setdefault("own:decoded", {})
    if key not in cache:
        if len(cache) >= 4 * CAPS.max_pictures:
            cache.clear()
        try:
            cache[key] = picture_to_array(data, OWN_IMAGE_SIZE)
        except InvalidImageError as exc:
            cache[key] = str(exc)
    return cache[key]


def _zip_classes() -> tuple[dict[str, list[np.ndarray]], list[str]]:
    upload = st.file_uploader("A .zip with one folder per class (class_name/picture.jpg)", type=["zip"],
                              key="own:zip", help="Each folder's name becomes a class name. The zip is read in "
                              "memory, never unpacked; links, paths leaving the folder, archives inside it, files "
                              "that are not pictures and zip bombs are refused.")
    if upload is None:
        return {}, []
    memo = st.session_state.get("own:zip_result")
    if memo is None or memo[0] != upload.file_id:
        notes: list[str] = []
        classes: dict[str, list[np.ndarray]] = {}
        try:
            found = read_zip(upload.getvalue())
            notes += found.skipped
            for label, items in found.classes.items():
                for name, raw in items:
                    picture = _decoded(f"zip:{upload.file_id}:{name}", raw)
                    if isinstance(picture, str):
                        notes.append(f"{name}: refused: {picture}")
                    else:
                        classes.setdefault(label, []).append(picture)
        except ArchiveError as exc:
            notes.append(str(exc))
        memo = (upload.file_id, classes, notes)
        st.session_state["own:zip_result"] = memo
    return memo[1], memo[2]


def _class_box(i: int, used_bytes: list[int]) -> tuple[str, list[np.ndarray], list[str]]:
    name = st.text_input(f"Class {i + 1}", key=f"own:name:{i}", max_chars=CAPS.max_name,
                         placeholder="its name, e.g. mug")
    files = st.file_uploader(f"Pictures of class {i + 1}", type=[e[1:] for e in PICTURE_EXTENSIONS],
                             accept_multiple_files=True, key=f"own:files:{i}", label_visibility="collapsed")
    pictures: list[np.ndarray] = []
    notes: list[str] = []
    for upload in files or []:
        if len(pictures) >= CAPS.max_per_class:
            notes.append(f"{upload.name}: left out, at most {CAPS.max_per_class} pictures per class.")
            continue
        if upload.size > CAPS.max_file_bytes or used_bytes[0] + upload.size > CAPS.max_total_bytes:
            notes.append(f"{upload.name}: left out, over the limit of {human_bytes(CAPS.max_file_bytes)} per picture "
                         f"or {human_bytes(CAPS.max_total_bytes)} in all.")
            continue
        used_bytes[0] += upload.size
        picture = _decoded(f"file:{upload.file_id}", upload)
        if isinstance(picture, str):
            notes.append(f"{upload.name}: refused: {picture}")
        else:
            pictures.append(picture)
    webcam = st.session_state.get(f"own:cam:{i}", [])
    pictures += webcam[: max(0, CAPS.max_per_class - len(pictures))]
    return name, pictures, notes


def _webcam(names: list[str]) -> None:
    if not st.toggle("Take pictures with the webcam", key="own:use_camera",
                     help="Each photo you take is added to the class chosen here (shrunk at once; the photo itself "
                          "is not kept)."):
        return
    target = st.radio("Add the webcam photos to", list(range(len(names))), key="own:camera_class", horizontal=True,
                      format_func=lambda i: names[i] or f"class {i + 1}")
    shot = st.camera_input("Webcam", key="own:camera", label_visibility="collapsed")
    if shot is not None and st.session_state.get("own:camera_seen") != shot.file_id:
        st.session_state["own:camera_seen"] = shot.file_id
        picture = _decoded(f"cam:{shot.file_id}", shot)
        taken = st.session_state.setdefault(f"own:cam:{target}", [])
        if isinstance(picture, str):
            st.warning(f"That photo was refused: {picture}")
        elif len(taken) >= CAPS.max_per_class:
            st.warning(f"This class has its {CAPS.max_per_class} pictures already.")
        else:
            taken.append(picture)
    counts = [len(st.session_state.get(f"own:cam:{i}", [])) for i in range(len(names))]
    if any(counts):
        st.caption("Webcam photos so far: " + ", ".join(f"{names[i] or f'class {i + 1}'} {c}"
                                                         for i, c in enumerate(counts)))
        if st.button("Forget the webcam photos", key="own:camera_clear"):
            for i in range(CAPS.max_classes):
                st.session_state.pop(f"own:cam:{i}", None)
            st.rerun()


def class_editor() -> tuple[dict[str, list[np.ndarray]], list[str]]:
    """Draw the editor; returns the classes' pictures (name -> 32 x 32 pictures) and what stops them training."""
    st.caption(":material/shield: Limits: " + limits_sentence())
    how = st.radio("Your pictures", list(HOW), format_func=HOW.get, key="own:how", horizontal=True)
    notes: list[str] = []
    if how == "zip":
        classes, notes = _zip_classes()
        if not classes:
            problems = ["Upload a .zip with a folder of pictures per class."]
            _show_notes(notes)
            return {}, problems
        names, pictures = list(classes), list(classes.values())
        for name, items in classes.items():
            _show_class(name, items)
    else:
        count = st.number_input("Number of classes", CAPS.min_classes, CAPS.max_classes, 3, key="own:count")
        used = [0]
        names, pictures = [], []
        columns = st.columns(3, gap="small")
        for i in range(int(count)):
            with columns[i % 3].container(border=True):
                name, items, class_notes = _class_box(i, used)
                names.append(name)
                pictures.append(items)
                notes += class_notes
                _show_class(None, items)
        _webcam(names)
    _show_notes(notes)
    problems = check_classes(names, [len(p) for p in pictures])
    classes = {" ".join(n.split()): p for n, p in zip(names, pictures)}
    return (classes if not problems else {}), problems


def _show_class(name: str | None, items: list[np.ndarray]) -> None:
    held = held_out_count(len(items))
    text = f"{len(items)} picture{'s' if len(items) != 1 else ''}"
    if len(items) >= 2:
        text += f": {len(items) - held} to train on, {held} held out"
    if name is None:
        st.caption(text)
    else:
        st.markdown(f"**{name}**: {text}")
    if items:
        st.image([np.asarray(p) for p in items[:12]], width=40)


def _show_notes(notes: list[str]) -> None:
    if not notes:
        return
    with st.expander(f":material/warning: {len(notes)} file{'s' if len(notes) != 1 else ''} left out or refused",
                     expanded=len(notes) <= 3):
        st.markdown("\n".join(f"- {note}" for note in notes[:50]) + (f"\n- ... and {len(notes) - 50} more"
                                                                     if len(notes) > 50 else ""))


def confusion_figure(matrix: np.ndarray, classes: list[str], *, step: int) -> go.Figure:
    """The held-out confusion matrix at a snapshot: rows are the true classes, columns the model's guesses."""
    k = len(classes)
    fig = go.Figure(go.Heatmap(z=matrix, x=classes, y=classes, colorscale="Blues", showscale=False,
                               text=matrix, texttemplate="%{text}", zmin=0,
                               hovertemplate="true: %{y}<br>guessed: %{x}<br>%{z} pictures<extra></extra>"))
    fig.update_layout(
        title=dict(text=f"Held-out confusion matrix, step {step:,}",
                   subtitle=dict(text="rows: the true class; columns: the model's guess; the diagonal is right")),
        height=max(240, 120 + 32 * k), margin=dict(l=10, r=10, b=10),
        xaxis=dict(title="guessed", side="bottom"), yaxis=dict(title="true", autorange="reversed"))
    return fig
