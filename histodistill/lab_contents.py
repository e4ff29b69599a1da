"""JupyterLab's contents manager for the project's notebooks: jupytext's (the `.py` files open
as notebooks), serving each text notebook with the `language_info` its kernel will report.

A text notebook keeps no `language_info` in its file (jupytext leaves it out: it names the
reader's Python, not the notebook). JupyterLab holds one for every notebook: it adds a stub
when a notebook without one opens, and the kernel's own when the kernel starts, and either
change marks the notebook unsaved before any edit. Served with the kernel's `language_info`,
the notebook JupyterLab holds is the one it would save, and jupytext writes that back as the
same bytes. `scripts/lab.sh` makes JupyterLab use this manager:

    jupyter lab --ServerApp.contents_manager_class=histodistill.lab_contents.NotebookContents
"""

from __future__ import annotations

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from jupytext.async_contentsmanager import build_async_jupytext_contents_manager_class

_JupytextContents = build_async_jupytext_contents_manager_class(AsyncLargeFileManager)


def kernel_language_info(kernelspec: dict | None) -> dict | None:
    """The `language_info` a kernel of `kernelspec` reports when it starts, for a Python
    kernel (this environment's IPython kernel); None for another language."""
    if (kernelspec or {}).get("language") != "python":
        return None
    from ipykernel.ipkernel import IPythonKernel

    return dict(IPythonKernel.language_info)


def with_language_info(notebook: dict, path: str) -> dict:
    """`notebook` (nbformat content) with its kernel's `language_info` where it is a text
    notebook that has none; an `.ipynb` keeps what its file holds."""
    metadata = notebook.setdefault("metadata", {})
    if path.endswith(".ipynb") or "language_info" in metadata:
        return notebook
    info = kernel_language_info(metadata.get("kernelspec"))
    if info is not None:
        metadata["language_info"] = info
    return notebook


class NotebookContents(_JupytextContents):
    """jupytext's contents manager whose text notebooks come with their kernel's `language_info`."""

    async def get(self, path, content=True, type=None, format=None, **kwargs):
        model = await super().get(path, content=content, type=type, format=format, **kwargs)
        if model.get("type") == "notebook" and model.get("content") is not None:
            with_language_info(model["content"], path)
        return model
