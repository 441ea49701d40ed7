"""The explorer: a Gradio app over the head-properties study's results, serving every processed model.

A model is *processed* when ``{results}/heads/{model}/explorer.json`` exists (the manifest the workflow writes).
The app reads each model's :class:`~clip_interp.heads.index.HeadIndex` (per-head contributions of the image set,
its image list, TEXTSPAN texts, labels and scores) and runs the five analyses of
:mod:`clip_interp.heads.analyses` on a query: one forward of the query image (or of the query text) only, never a
forward over the image set.

The handlers are the methods of :class:`~clip_interp.heads.explorer.state.Explorer`: plain functions of plain
values that return the outputs or raise
:class:`~clip_interp.heads.explorer.request_checks.ExplorerInputError` (an
:class:`~clip_interp.errors.InputError`) with a one-line message. The Gradio layer
(:func:`~clip_interp.heads.explorer.layout.build_app`) shows that message in the status box and as a warning toast,
clears the outputs, and keeps serving; an unexpected exception is logged with its traceback on the server and shown
as a one-line message, never as a traceback in the page.

Modules, one concern each:

* :mod:`.request_checks` — the error type and the checks of request values (texts, k, map scopes);
* :mod:`.pictures` — what the page shows of an image: the centre crop, overlays of maps, thumbnails;
* :mod:`.results` — the result containers (neighbour rankings with their galleries, a model's overview);
* :mod:`.state` — :class:`Explorer`: the results folder, the models' indices opened once, the handlers;
* :mod:`.layout` — the Gradio page and its events;
* :mod:`.server` — the network checks and :func:`serve`.
"""
