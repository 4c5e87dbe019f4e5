"""Generation preview: greedy completions equal transformers' own greedy ``generate``, stop strings cut
them, a cancel stops them between tokens, models that are not causal LMs are refused; in the app the
panel shows the LM demo merge's completions, refreshes them when a new slider value rests, and files
them with the run in the history and the project."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.errors import Cancelled, EngineInputError
from engine.graph import Recipe
from engine.live import LiveSession
from engine.evaluation.lm_tasks import CausalLMTask
from engine.live.generation import (BASE, MERGE, MODEL, NEEDS_LM, GenerationPreview, GenerationSettings,
                                    causal_lm_folder, preview_session, session_preview)
from engine.runtime import CancelToken
from zoo_helpers import reduced_lm_zoo, reduced_zoo, single_thread

PROMPTS = ["def ", "The value of", '{"name": ', "import os\nimport"]


def _hf(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def _greedy_text(model, tok, prompt: str, steps: int) -> str:
    """transformers' greedy continuation of ``prompt``, cut at the end-of-text token."""
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    if tok.eos_token_id in new:
        new = new[:new.index(tok.eos_token_id)]
    return tok.decode(new, skip_special_tokens=True)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("folder", ["base", "experts/python"])
def test_completions_equal_transformers_greedy_generate(folder):
    path = reduced_lm_zoo() / folder
    model, tok = _hf(path)
    preview = GenerationPreview(path)
    settings = GenerationSettings(max_new_tokens=10, stop=())
    with single_thread():
        got = preview.complete(_state(model), PROMPTS, settings)  # one batch, padded on the left
        want = [_greedy_text(model, tok, p, 10) for p in PROMPTS]
    assert [c.text for c in got] == want
    assert [c.prompt for c in got] == PROMPTS
    assert len({c.text for c in got}) > 1  # the prompts lead somewhere different


def test_stop_strings_cut_completions_and_a_cache_serves_them_again(monkeypatch):
    path = reduced_lm_zoo() / "experts/python"
    model, _tok = _hf(path)
    state = _state(model)
    preview = GenerationPreview(path)
    with single_thread():
        free = preview.complete(state, PROMPTS, GenerationSettings(max_new_tokens=10, stop=()))
        assert not any(c.stopped for c in free if len(c.text) > 0)
        text = next(c.text for c in free if len(c.text.strip()) > 3)
        stop = text.strip()[2]  # a character inside that completion
        cut = preview.complete(state, PROMPTS, GenerationSettings(max_new_tokens=10, stop=(stop,)), model_key="py")
    for before, after in zip(free, cut):
        if stop in before.text:
            assert after.text == before.text[:before.text.index(stop)] and after.stopped
        else:
            assert after.text == before.text and not after.stopped
    calls = []
    monkeypatch.setattr(GenerationPreview, "_generate", lambda self, *a: calls.append(a) or [])
    again = preview.complete(state, PROMPTS[::-1], GenerationSettings(max_new_tokens=10, stop=(stop,)), model_key="py")
    assert again == cut[::-1] and not calls  # cached per prompt: nothing generated
    assert preview.cached("py", PROMPTS, GenerationSettings(max_new_tokens=10, stop=())) is None


class CancelAfter(CancelToken):
    """A token that cancels itself at its ``n``-th poll; counts the polls."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.polls = n, 0

    def raise_if_cancelled(self) -> None:
        self.polls += 1
        if self.polls >= self.n:
            self.cancel()
        super().raise_if_cancelled()


def test_a_cancel_stops_generation_between_tokens():
    path = reduced_lm_zoo() / "base"
    model, _tok = _hf(path)
    preview = GenerationPreview(path)
    token = CancelAfter(3)
    settings = GenerationSettings(max_new_tokens=40, stop=())
    with single_thread(), pytest.raises(Cancelled):
        preview.complete(_state(model), ["def "], settings, model_key="base", cancel=token)
    assert token.polls == 3  # polled once per token: stopped at the third of 40
    assert preview.cached("base", ["def "], settings) is None  # nothing half-done was kept


def test_models_that_are_not_causal_lms_are_refused(tmp_path):
    lm = Recipe.load(reduced_lm_zoo() / "demo.json")
    assert causal_lm_folder(lm, "merge") == reduced_lm_zoo() / "base"
    with pytest.raises(EngineInputError, match=f"^{NEEDS_LM}.*not Hugging Face model folders"):
        causal_lm_folder(Recipe.load(reduced_zoo() / "demo.json"), "merge")
    classifier = tmp_path / "clf"
    classifier.mkdir()
    (classifier / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    lm.set_params("base", {"path": str(classifier)})
    with pytest.raises(EngineInputError, match=f"^{NEEDS_LM}.*'clf' is a BertForSequenceClassification"):
        causal_lm_folder(lm, "merge")


def test_a_live_session_previews_its_merge_base_and_inputs(monkeypatch):
    recipe = Recipe.load(reduced_lm_zoo() / "demo.json")
    settings = GenerationSettings(max_new_tokens=6, stop=("\n",))
    with single_thread():
        session = LiveSession(recipe, "merge", device="cpu")  # scored on the demo's suite
        session.update({**recipe.nodes["merge"].params, "lambda": 0.5})
        preview = session_preview(session, causal_lm_folder(recipe, "merge"))
        lm_tasks = [t for t in session.evaluator.tasks if isinstance(t, CausalLMTask)]
        assert lm_tasks and preview.network is lm_tasks[0].network  # one module for scores and completions
        columns = []
        preview_session(session, preview, PROMPTS[:2], settings, columns.append)
        assert [(c.role, c.node_id) for c in columns] == [(MERGE, "merge"), (BASE, "base"), *(
            (MODEL, n) for n in ("python", "prose", "data", "c", "logs_lora"))]
        assert columns[0].params["lambda"] == 0.5
        merged = preview.complete(session.state_dict(), PROMPTS[:2], settings)
        for name, column in (("base", columns[1]), ("experts/python", columns[2])):
            model, tok = _hf(reduced_lm_zoo() / name)  # the column equals the model read from its own files
            want = [_greedy_text(model, tok, p, 6).split("\n")[0] for p in PROMPTS[:2]]
            assert [c.text for c in column.completions] == want, name
    assert [c.text for c in columns[0].completions] == [c.text for c in merged]
    calls = []
    monkeypatch.setattr(GenerationPreview, "_generate", lambda self, *a: calls.append(a) or [])
    again = []
    preview_session(session, preview, PROMPTS[:2], settings, again.append)
    assert again == columns and not calls  # the same weights again: every column from the cache


# ---------------------------------------------------------------- the panel


@pytest.fixture
def lm_window(new_window, qtbot):
    """A main window on the LM demo, tuning its merge live on the CPU, the Generation dock in front."""
    win = new_window()
    win.document.live.device = "cpu"
    win.document.live.settle_s = 0.1
    win.open_project(reduced_lm_zoo() / "demo.json")
    win.generation_panel.max_tokens.setValue(6)
    win.generation_panel.set_prompts(PROMPTS[:2])
    yield win
    win.document.live.stop()


def test_the_panel_previews_the_merge_and_refreshes_it_when_a_new_value_rests(lm_window, new_window, qtbot, tmp_path):
    win = lm_window
    panel, controller = win.generation_panel, win.document.live
    win.generation_dock.raise_()
    qtbot.waitUntil(lambda: panel.refreshes >= 1, timeout=60_000)
    qtbot.waitUntil(lambda: controller.loop.idle(0.01) and panel.status.text().startswith("greedy"), timeout=30_000)
    first = [panel.completion(r, MERGE, "merge") for r in range(2)]
    assert panel.merge_params["lambda"] == 1.0
    headers = [panel.table.horizontalHeaderItem(c).text() for c in range(panel.table.columnCount())]
    assert headers == ["merge (live merge)", "base (base)", "python", "prose", "data", "c", "logs_lora"]
    for role, node in ((BASE, "base"), (MODEL, "python"), (MODEL, "logs_lora")):
        assert all(panel.completion(r, role, node) is not None for r in range(2)), node
    preview = GenerationPreview(reduced_lm_zoo() / "base")  # what the merge's weights write, computed here

    def expect() -> list[str]:
        return [c.text for c in preview.complete(controller.session.state_dict(), PROMPTS[:2], panel.settings())]

    assert first == expect()

    refreshes = panel.refreshes
    win.scene.select_node("merge")
    win.inspector.fields["lambda"].scalar.spin.setValue(0.2)  # a slider value that then rests
    qtbot.waitUntil(lambda: panel.refreshes > refreshes and panel.merge_params["lambda"] == 0.2, timeout=60_000)
    qtbot.waitUntil(lambda: controller.loop.idle(0.01) and panel.status.text().startswith("greedy"), timeout=30_000)
    second = [panel.completion(r, MERGE, "merge") for r in range(2)]
    assert second == expect()

    def at_rest(r: dict) -> bool:
        return r.get("params", {}).get("lambda") == 0.2

    point = [r for r in win.results_panel.trail.records() if at_rest(r)][-1]  # where the value rested
    assert [c["text"] for c in point["generations"]["completions"]] == second
    assert [c["prompt"] for c in point["generations"]["completions"]] == PROMPTS[:2]
    assert point["generations"]["settings"]["max_new_tokens"] == 6
    qtbot.waitUntil(lambda: "generations" in win.results_panel.model.live, timeout=5000)  # the live row too
    assert win.results_panel.keep_live()  # kept: the run joins the history with its completions
    run = [r for r in win.document.results if at_rest(r)][-1]
    assert run["generations"] == point["generations"]

    path = tmp_path / "p.wsproj"  # prompts, settings and completions live in the project file
    assert win._write_project(path)
    saved = json.loads(path.read_text())
    assert saved["generation"]["prompts"] == PROMPTS[:2]
    assert any(r.get("generations") for r in saved["results"])
    again = new_window()
    again.open_project(path)
    assert again.generation_panel.prompts() == PROMPTS[:2] and again.generation_panel.max_tokens.value() == 6
    again.document.live.stop()


def test_a_moving_slider_cancels_the_generation_in_flight(lm_window, qtbot):
    win = lm_window
    panel = win.generation_panel
    panel.max_tokens.setValue(200)  # long enough to be caught running
    panel.stop_edit.setText("")
    panel.stop_edit.editingFinished.emit()
    assert panel.settings().stop == ()
    win.generation_dock.raise_()
    qtbot.waitUntil(lambda: panel.status.text() == "generating…", timeout=60_000)
    job = panel._job
    win.scene.select_node("merge")
    win.inspector.fields["lambda"].scalar.spin.setValue(0.6)
    assert job.token.cancelled and panel.status.text() == "waiting for the slider to rest…"
    panel.max_tokens.setValue(4)
    qtbot.waitUntil(lambda: panel.merge_params is not None and panel.merge_params["lambda"] == 0.6, timeout=60_000)


def test_the_image_zoo_says_generation_needs_a_causal_language_model(window, qtbot):
    window.document.live.device = "cpu"
    window.open_project(reduced_zoo() / "demo.json")
    panel = window.generation_panel
    qtbot.waitUntil(lambda: panel.pages.currentIndex() == 0 and "causal language model" in panel.message.text(),
                    timeout=20_000)
    assert panel.message.text().startswith("Generation preview needs a causal language model")
    assert panel.table.columnCount() == 0
    window.document.live.stop()


def test_prompts_and_settings_are_edited_in_the_panel_and_kept_by_the_document(qtbot):
    from app.document import Document
    from app.generation_panel import NO_MERGE, GenerationPanel

    document = Document(device="cpu")
    panel = GenerationPanel(document)
    qtbot.addWidget(panel)
    assert panel.message.text() == NO_MERGE and panel.pages.currentIndex() == 0  # nothing is tuned live
    panel.set_prompts(["one"])
    panel.add_prompt("two")
    panel.prompt_list.item(1).setText("def f():\\n    return")  # typed in the list: \n is a new line
    assert panel.prompts() == ["one", "def f():\n    return"]
    panel.prompt_list.setCurrentRow(0)
    panel.remove_button.click()
    panel.stop_edit.setText("\\n|END")
    panel.stop_edit.editingFinished.emit()
    panel.max_tokens.setValue(9)
    panel.chat_box.setChecked(True)
    assert document.generation == {"prompts": ["def f():\n    return"], "max_new_tokens": 9, "stop": ["\n", "END"],
                                   "chat_template": True}
    assert panel.table.rowCount() == 1
    document.generation = {"prompts": ["a\\b"], "max_new_tokens": 3, "stop": [], "chat_template": False}
    document.opened.emit()  # another project: its prompts and settings
    assert panel.prompts() == ["a\\b"] and panel.prompt_list.item(0).text() == "a\\\\b"
    assert panel.settings() == GenerationSettings(3, (), False)
