"""The notebooks in JupyterLab: opening one and saving it unedited changes nothing.

JupyterLab marks a notebook unsaved when its model changes after loading. For a text
notebook it changes `language_info` twice (a stub when the notebook has none, then the
kernel's own when the kernel starts); the project's contents manager serves the kernel's
from the start. These tests replay that outside a browser, against a real kernel's reply;
docs/jupyterlab.md says how it was checked in one."""

import asyncio
import shutil

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import start_new_kernel
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from jupytext.async_contentsmanager import build_async_jupytext_contents_manager_class

from histodistill import lab_contents, notebook_runs


@pytest.fixture(scope="module")
def kernel_reply() -> dict:
    """What JupyterLab writes into a notebook's metadata once its kernel (python3) starts:
    the kernelspec's name, display name and language, and the kernel's `language_info`."""
    manager, client = start_new_kernel(kernel_name="python3")
    try:
        client.kernel_info()
        reply = client.get_shell_msg(timeout=30)["content"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    spec = KernelSpecManager().get_kernel_spec("python3")
    return {"kernelspec": {"name": "python3", "display_name": spec.display_name, "language": spec.language},
            "language_info": reply["language_info"]}


@pytest.fixture()
def project_copy(tmp_path):
    root = notebook_runs.notebook_sources()[0].parents[1]
    shutil.copytree(root / "notebooks", tmp_path / "notebooks")
    shutil.copy(root / "jupytext.toml", tmp_path / "jupytext.toml")
    return tmp_path


def opened_in_jupyterlab(metadata: dict, kernel_reply: dict) -> dict:
    """The metadata JupyterLab holds once the notebook is open and its kernel has started."""
    held = {**metadata}
    held.setdefault("language_info", {"name": "python"})  # the stub a notebook without one gets
    held.update(kernel_reply)
    return held


def test_opening_a_notebook_changes_nothing_and_saving_it_keeps_its_bytes(project_copy, kernel_reply):
    manager = lab_contents.NotebookContents(root_dir=str(project_copy))
    sources = sorted((project_copy / "notebooks").glob("0*.py"))
    assert len(sources) == 7
    for source in sources:
        before = source.read_bytes()
        path = f"notebooks/{source.name}"
        model = asyncio.run(manager.get(path, content=True, type="notebook"))
        metadata = model["content"]["metadata"]
        assert opened_in_jupyterlab(metadata, kernel_reply) == metadata, source.name  # not marked unsaved
        asyncio.run(manager.save(model, path))
        assert source.read_bytes() == before, source.name


def test_jupytexts_own_manager_serves_what_jupyterlab_changes_on_opening(project_copy, kernel_reply):
    """The control: jupytext's manager alone serves no `language_info`, so JupyterLab's model
    changes as the notebook opens, the unsaved mark the project's manager removes."""
    manager = build_async_jupytext_contents_manager_class(AsyncLargeFileManager)(root_dir=str(project_copy))
    model = asyncio.run(manager.get("notebooks/01_data.py", content=True, type="notebook"))
    metadata = model["content"]["metadata"]
    assert "language_info" not in metadata
    assert opened_in_jupyterlab(metadata, kernel_reply) != metadata


def test_an_ipynb_or_another_language_keeps_what_its_file_holds():
    saved = {"metadata": {"kernelspec": {"name": "python3", "language": "python"}, "language_info": {"name": "python"}}}
    assert lab_contents.with_language_info(saved, "a.py")["metadata"]["language_info"] == {"name": "python"}
    bare = {"metadata": {"kernelspec": {"name": "python3", "language": "python"}}}
    assert "language_info" not in lab_contents.with_language_info(bare, "a.ipynb")["metadata"]
    other = {"metadata": {"kernelspec": {"name": "ir", "language": "R"}}}
    assert "language_info" not in lab_contents.with_language_info(other, "a.R")["metadata"]
