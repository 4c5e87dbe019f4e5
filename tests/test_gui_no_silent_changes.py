"""No silent changes: the wheel scrolls the inspector, typed values are refused visibly rather than
replaced, sliders cover a typical span with fine steps on Shift."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication, QMessageBox, QStyle, QStyleOptionSlider, QWidget
from safetensors.torch import save_file

from app.inspector.fields import IntField
from app.document import Document
from app.inspector.panel import InspectorPanel
from app.project import Project
from app.workers import JobState
from engine.errors import Cancelled
from engine.graph import Edge, Node, Recipe
from engine.methods.base import Param


@pytest.fixture
def merge(qtbot) -> SimpleNamespace:
    """base, e1, e2 → a TIES merge (λ 0.4), shown in a short inspector that has to scroll."""
    recipe = Recipe("t")
    for nid in ("base", "e1", "e2"):
        recipe.add_node(Node(nid, "checkpoint", {"path": f"{nid}.safetensors"}))
    recipe.add_node(Node("m", "merge", {"method": "ties", "lambda": 0.4}))
    for e in (Edge("base", "m", "base"), Edge("e1", "m", "models"), Edge("e2", "m", "models")):
        recipe.add_edge(e)
    document = Document(recipe)
    panel = InspectorPanel(document)
    qtbot.addWidget(panel)
    panel.resize(380, 300)
    panel.show()
    qtbot.waitExposed(panel)
    panel.show_node("m")
    return SimpleNamespace(document=document, recipe=recipe, stack=document.undo_stack, panel=panel)


def wheel(widget: QWidget, dy: int) -> None:
    at = QPointF(widget.rect().center())
    event = QWheelEvent(at, QPointF(widget.mapToGlobal(at.toPoint())), QPoint(0, 0), QPoint(0, dy),
                        Qt.NoButton, Qt.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_the_wheel_scrolls_the_panel_instead_of_changing_unfocused_controls(merge, qtbot) -> None:
    panel = merge.panel
    bar = panel._scroll.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0)
    scalar = panel.fields["lambda"].scalar
    density = panel.fields["density"].rows[""].scalar
    before = merge.recipe.to_json()
    for control in (scalar.slider, scalar.spin, density.slider, panel.method_combo, panel.fields["scope"].combo):
        assert not control.hasFocus()
        bar.setValue(0)
        wheel(control, -120)
        assert bar.value() > 0, f"the panel did not scroll over {type(control).__name__}"
    assert merge.recipe.to_json() == before and merge.stack.count() == 0
    assert scalar.spin.value() == pytest.approx(0.4) and panel.method_combo.currentData() == "ties"

    panel.activateWindow()
    qtbot.waitUntil(panel.isActiveWindow)
    scalar.slider.setFocus()
    qtbot.waitUntil(scalar.slider.hasFocus)
    wheel(scalar.slider, 120)  # with focus, the wheel is the user's choice to change the value
    assert merge.recipe.nodes["m"].params["lambda"] != pytest.approx(0.4)


def type_into(qtbot, spin, text: str) -> None:
    spin.setFocus()
    spin.selectAll()
    qtbot.keyClicks(spin, text)
    qtbot.keyClick(spin, Qt.Key_Return)


def test_a_typed_value_outside_the_range_is_refused_visibly_and_never_replaced(merge, qtbot) -> None:
    scalar = merge.panel.fields["lambda"].scalar
    assert "between -5 and 5" in scalar.spin.toolTip()
    for typed, value in (("9.99", 9.99), ("-100", -100.0)):
        type_into(qtbot, scalar.spin, typed)
        assert merge.recipe.nodes["m"].params["lambda"] == 0.4 and merge.stack.count() == 0
        assert scalar.spin.value() == pytest.approx(value)  # what the user typed stays in the box
        assert scalar.invalid and "border" in scalar.spin.styleSheet()
        assert scalar.error.isVisible() and "between -5 and 5" in scalar.error.text()
    qtbot.keyClick(scalar.spin, Qt.Key_Escape)
    assert scalar.spin.value() == pytest.approx(0.4) and not scalar.invalid and not scalar.error.isVisible()
    type_into(qtbot, scalar.spin, "4.5")  # outside the slider's span, inside the declared range
    assert merge.recipe.nodes["m"].params["lambda"] == pytest.approx(4.5)
    assert scalar.hi >= 4.5 and not scalar.invalid

    density = merge.panel.fields["density"].rows[""].scalar
    type_into(qtbot, density.spin, "5")
    assert "density" not in merge.recipe.nodes["m"].params
    assert density.spin.value() == pytest.approx(5.0) and density.invalid and "between 0 and 1" in density.error.text()
    type_into(qtbot, density.spin, "0.3")
    assert merge.recipe.nodes["m"].params["density"] == pytest.approx(0.3) and not density.invalid


def test_an_integer_outside_its_range_is_refused_not_clamped(qtbot) -> None:
    field = IntField(Param("k", "int", 2, "how many", min=0, max=64))
    qtbot.addWidget(field)
    field.show()
    field.set_value(2)
    edits = []
    field.edited.connect(lambda v, _k: edits.append(v))
    type_into(qtbot, field.spin, "100")
    assert edits == [] and field.spin.value() == 100 and field.error.isVisible()
    qtbot.keyClick(field.spin, Qt.Key_Escape)
    assert field.spin.value() == 2 and not field.error.isVisible()
    type_into(qtbot, field.spin, "12")
    assert edits == [12]


def handle_centre(slider) -> QPoint:
    opt = QStyleOptionSlider()
    slider.initStyleOption(opt)
    return slider.style().subControlRect(QStyle.ComplexControl.CC_Slider, opt, QStyle.SubControl.SC_SliderHandle,
                                         slider).center()


def test_sliders_cover_the_typical_span_and_shift_gives_fine_steps(merge, qtbot) -> None:
    scalar = merge.panel.fields["lambda"].scalar
    assert (scalar.lo, scalar.hi) == (0.0, 2.0)  # typical span; typing reaches −5…5
    slider = scalar.slider
    slider.setFocus()
    qtbot.keyClick(slider, Qt.Key_Right)
    coarse = merge.recipe.nodes["m"].params["lambda"] - 0.4
    qtbot.keyClick(slider, Qt.Key_Right, Qt.ShiftModifier)
    fine = merge.recipe.nodes["m"].params["lambda"] - 0.4 - coarse
    assert coarse == pytest.approx(0.02, abs=1e-9) and fine == pytest.approx(0.002, abs=1e-9)
    spin, before = scalar.spin, scalar.spin.value()
    spin.setFocus()
    qtbot.keyClick(spin, Qt.Key_Up, Qt.ShiftModifier)
    assert spin.value() - before == pytest.approx(spin.singleStep() / 10, abs=1e-9)
    qtbot.keyClick(spin, Qt.Key_Up)
    assert spin.value() - before == pytest.approx(spin.singleStep() * 1.1, abs=1e-9)

    def drag(modifiers) -> float:
        start = slider.value()
        at = handle_centre(slider)
        qtbot.mousePress(slider, Qt.LeftButton, pos=at)
        for dx in (10, 20, 40):
            QApplication.sendEvent(slider, QMouseEvent(QEvent.MouseMove, QPointF(at + QPoint(dx, 0)),
                                                       QPointF(slider.mapToGlobal(at + QPoint(dx, 0))),
                                                       Qt.NoButton, Qt.LeftButton, modifiers))
        qtbot.mouseRelease(slider, Qt.LeftButton, pos=at + QPoint(40, 0))
        return slider.value() - start

    plain, shifted = drag(Qt.NoModifier), drag(Qt.ShiftModifier)
    assert plain > 0 and 0 < shifted <= plain / 5



def test_check_graph_reads_the_headers_and_marks_an_unreadable_checkpoint(window, qtbot, tmp_path) -> None:
    path = tmp_path / "expert.safetensors"
    save_file({"w": torch.ones(2, 2)}, str(path))
    nid = window.scene.add_node_at("checkpoint", (0, 0), {"path": str(path)})
    qtbot.waitUntil(lambda: len(window.library.model.ready()) == 1, timeout=10_000)
    path.write_bytes(b"\x00" * 5)  # the file broke after it was added
    item = window.scene.node_item(nid)
    assert item.problems == []
    window.validate_action.trigger()
    assert window.statusBar().currentMessage().startswith("Checking")  # the check runs in a worker
    qtbot.waitUntil(lambda: bool(item.problems), timeout=10_000)
    assert "expert.safetensors" in item.toolTip()
    assert any(p.node_id == nid for p in window.inspector.problems)
    assert "problem" in window.statusBar().currentMessage()


def test_an_unreadable_checkpoint_is_marked_on_its_node_and_undo_opens_no_dialog(window, qtbot, tmp_path) -> None:
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint")
    nid = window.scene.add_node_at("checkpoint", (0, 0), {"path": str(bad)})
    qtbot.waitUntil(lambda: bool(window.scene.node_item(nid).problems), timeout=10_000)
    assert "broken.safetensors" in window.scene.node_item(nid).toolTip()
    window.scene.select_node(nid)
    window.scene.delete_selected()
    window.undo_stack.undo()  # the node comes back: its problem shows on it, not in a dialog
    qtbot.waitUntil(lambda: window.scene.node_item(nid) is not None and bool(window.scene.node_item(nid).problems),
                    timeout=10_000)
    qtbot.wait(200)
    assert window.error_box is None and QApplication.activeModalWidget() is None
    assert "broken.safetensors" in window.statusBar().currentMessage() or window.scene.node_item(nid).problems
    window.undo_stack.redo()  # the next shortcut reaches the window
    assert nid not in window.recipe.nodes


def test_quitting_during_a_merge_asks_before_cancelling_it(window, qtbot, monkeypatch) -> None:
    def work(_progress, cancel):
        while not cancel.cancelled:
            time.sleep(0.01)
        raise Cancelled("cancelled")

    job = window.jobs.submit("Merge → out", work, kind="merge")
    qtbot.waitUntil(lambda: job.state is JobState.RUNNING, timeout=5_000)
    asked: list[str] = []
    answers = iter([QMessageBox.No, QMessageBox.Yes])

    def question(_parent, _title, text, *_a, **_k):
        asked.append(text)
        return next(answers) if "merge is running" in text else QMessageBox.Discard

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    assert not window.close()  # No: the merge goes on, the window stays
    assert "A merge is running: cancel it and quit?" in asked[0]
    assert window.isVisible() and not job.token.cancelled and job.state is JobState.RUNNING
    assert window.close()  # Yes: cancelled, then closed
    assert job.token.cancelled
    qtbot.waitUntil(lambda: job.state is JobState.CANCELLED, timeout=5_000)


def test_escape_in_a_refused_box_reverts_it_and_leaves_a_running_task_alone(window, qtbot) -> None:
    recipe = Recipe("t")
    recipe.add_node(Node("m", "merge", {"method": "ties", "lambda": 0.4}))
    window.apply_project(Project(recipe.to_json()), None)
    window.scene.select_node("m")

    def work(_progress, cancel):
        while not cancel.cancelled:
            time.sleep(0.01)
        raise Cancelled("cancelled")

    job = window.jobs.submit("Merge → out", work, kind="merge")
    qtbot.waitUntil(lambda: job.state is JobState.RUNNING and window.cancel_action.isEnabled(), timeout=5_000)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    scalar = window.inspector.fields["lambda"].scalar
    type_into(qtbot, scalar.spin, "9.99")
    assert scalar.invalid
    qtbot.keyClick(scalar.spin, Qt.Key_Escape)
    assert not scalar.invalid and scalar.spin.value() == pytest.approx(0.4)
    assert not job.token.cancelled
    job.cancel()
    qtbot.waitUntil(lambda: job.state.finished, timeout=5_000)
