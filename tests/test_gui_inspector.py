"""The Inspector: controls generated from the method registry, per-model rows, per-layer schedules, undo."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QLabel

from app.inspector.fields import BoolField, ChoiceField, FloatField, IntField, TextField
from app.document import Document
from app.inspector.panel import InspectorPanel
from app.inspector.schedule import resample
from app.inspector.weights import PerModelField
from engine.graph import Edge, Node, Recipe
from engine.methods import all_methods, get_method


@pytest.fixture
def merge(qtbot) -> SimpleNamespace:
    """base, e1, e2 → a TIES merge, shown in an inspector."""
    recipe = Recipe("t")
    for nid in ("base", "e1", "e2"):
        recipe.add_node(Node(nid, "checkpoint", {"path": f"{nid}.safetensors"}))
    recipe.add_node(Node("m", "merge", {"method": "ties"}))
    for e in (Edge("base", "m", "base"), Edge("e1", "m", "models"), Edge("e2", "m", "models")):
        recipe.add_edge(e)
    document = Document(recipe)
    panel = InspectorPanel(document, layers_of=lambda _path: 12)
    qtbot.addWidget(panel)
    panel.resize(380, 900)
    panel.show()
    panel.show_node("m")
    return SimpleNamespace(document=document, recipe=recipe, stack=document.undo_stack, panel=panel)


def params(m: SimpleNamespace) -> dict:
    return m.recipe.nodes["m"].params


def test_ties_controls_come_from_the_schema(merge) -> None:
    spec = get_method("ties")
    fields = merge.panel.fields
    assert set(fields) == {p.name for p in spec.params}
    assert isinstance(fields["weight"], PerModelField) and isinstance(fields["density"], PerModelField)
    assert isinstance(fields["lambda"], FloatField) and isinstance(fields["normalize"], BoolField)
    assert isinstance(fields["scope"], ChoiceField) and fields["scope"].combo.currentText() == "tensor"
    for p in spec.params:
        assert fields[p.name].toolTip() == p.help
    texts = " ".join(w.text() for w in merge.panel.findChildren(QLabel))
    for req in spec.requirements:
        assert req.value in texts
    assert "https://arxiv.org/abs/2306.01708" in texts
    assert merge.panel.method_combo.currentData() == "ties"
    density = fields["density"]
    assert density.same.isChecked() and list(density.rows) == [""]
    assert density.rows[""].scalar.spin.value() == pytest.approx(0.2)


@pytest.mark.parametrize("method", [m.name for m in all_methods()])
def test_every_method_gets_an_editor_for_every_parameter(merge, method) -> None:
    combo = merge.panel.method_combo
    combo.setCurrentIndex(combo.findData(method))
    combo.activated.emit(combo.currentIndex())
    assert params(merge)["method"] == method
    assert set(merge.panel.fields) == {p.name for p in get_method(method).params}
    for p in get_method(method).params:
        if p.name == "seed":
            assert isinstance(merge.panel.fields[p.name], IntField)
    merge.stack.undo()
    assert params(merge) == {"method": "ties"} and merge.panel.method_combo.currentData() == "ties"


def test_per_model_rows_write_a_mapping_and_same_for_all_a_scalar(merge) -> None:
    weight = merge.panel.fields["weight"]
    weight.same.setChecked(False)
    assert params(merge)["weight"] == {"e1": 1.0, "e2": 1.0}
    assert list(weight.rows) == ["e1", "e2"]
    weight.rows["e2"].scalar.spin.setValue(0.4)
    assert params(merge)["weight"] == {"e1": 1.0, "e2": 0.4}
    weight.same.setChecked(True)
    assert params(merge)["weight"] == 1.0
    merge.stack.undo()
    assert params(merge)["weight"] == {"e1": 1.0, "e2": 0.4}
    assert not merge.panel.fields["weight"].same.isChecked()
    assert merge.panel.fields["weight"].rows["e2"].scalar.spin.value() == pytest.approx(0.4)


def test_rows_follow_the_connected_models(merge) -> None:
    merge.document.add_node(Node("e3", "checkpoint", {"path": "e3.safetensors"}))
    merge.panel.fields["weight"].same.setChecked(False)
    merge.document.add_edge(Edge("e3", "m", "models"))
    assert list(merge.panel.fields["weight"].rows) == ["e1", "e2", "e3"]


def test_a_layer_schedule_from_the_curve_and_the_table(qtbot, merge) -> None:
    lam = merge.panel.fields["lambda"]
    lam.curve_button.click()
    assert params(merge)["lambda"] == [1.0, 1.0]
    editor = merge.panel.fields["lambda"].schedule
    assert editor.isVisible() and "12 layers" in editor.count.text()

    curve = editor.curve
    count = merge.stack.count()
    start = curve._point(1).toPoint()
    qtbot.mousePress(curve, Qt.LeftButton, pos=start)
    for dy in (10, 20, 30):
        qtbot.mouseMove(curve, start + QPoint(0, dy))
    qtbot.mouseRelease(curve, Qt.LeftButton, pos=start + QPoint(0, 30))
    first, last = params(merge)["lambda"]
    assert first == 1.0 and last < 1.0
    assert merge.stack.count() == count + 1  # the whole drag is one undo step

    editor.table.item(0, 2).setData(Qt.EditRole, 0.25)
    assert params(merge)["lambda"] == [0.25, last]
    qtbot.mouseDClick(curve, Qt.LeftButton, pos=curve._plot().center().toPoint() + QPoint(0, -40))
    assert params(merge)["lambda"] == resample([0.25, last], 3)
    merge.stack.undo()
    merge.stack.undo()
    assert params(merge)["lambda"] == [1.0, last]
    assert [editor.table.item(i, 2).data(Qt.EditRole) for i in range(2)] == [1.0, last]

    merge.panel.fields["lambda"].curve_button.click()  # back to one value: the mean
    assert params(merge)["lambda"] == pytest.approx((1.0 + last) / 2, abs=1e-4)


def test_a_per_model_value_can_vary_per_layer(qtbot, merge) -> None:
    density = merge.panel.fields["density"]
    density.same.setChecked(False)
    merge.panel.fields["density"].rows["e1"].curve_button.click()
    assert params(merge)["density"] == {"e1": [0.2, 0.2], "e2": 0.2}
    qtbot.waitUntil(merge.panel.fields["density"].rows["e1"].schedule.isVisible)


def test_values_the_form_cannot_show_are_edited_as_json(merge) -> None:
    merge.document.set_param("m", "lambda", [{"filter": "self_attn", "value": 0.3}, {"value": 0.5}])
    raw = merge.panel.fields["lambda"].raw
    assert raw.isVisible() and '"filter": "self_attn"' in raw.line.text()
    raw.line.setText('[{"filter": "mlp", "value": 0.7}, {"value": 0.5}]')
    raw.line.editingFinished.emit()
    assert params(merge)["lambda"][0] == {"filter": "mlp", "value": 0.7}


def test_other_node_types_use_their_declared_params(merge) -> None:
    merge.document.add_node(Node("s", "save", {"path": "out", "dtype": "auto"}))
    merge.panel.show_node("s")
    fields = merge.panel.fields
    assert isinstance(fields["path"], TextField) and isinstance(fields["dtype"], ChoiceField)
    fields["dtype"].combo.setCurrentText("bf16")
    fields["dtype"].combo.activated.emit(fields["dtype"].combo.currentIndex())
    assert merge.recipe.nodes["s"].params["dtype"] == "bf16"
    merge.document.remove_node("s")
    assert merge.panel.node_id == "" and merge.panel.fields == {}
