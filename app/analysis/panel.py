"""The Analysis panel: why a merge works or fails, from its task vectors.

Tabs: cosine matrix, sign conflicts per layer (before/after the TIES trim), magnitude histograms with
the trim and Breadcrumbs thresholds, TALL mask overlap, per-layer norms (with the merged update),
singular-value spectra, and the per-layer coefficients of the node (learned AdaMerging λ, schedules).
The statistics come from one streaming pass over the inputs (``engine.analysis.analyze``) run as a
background job of the document; small models are analysed as soon as a merge node is chosen, large
ones on request.

The panel takes the ``app.document.Document`` and follows its live node: the node the live controller
opens becomes the target (``set_target``), and once its inputs are resident their size decides whether
to analyse right away. Parameter edits of the target redraw the coefficients view — at once while the
panel is shown, else when it is shown again (its dock tells it with ``set_shown``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFileDialog, QHBoxLayout, QLabel, QPushButton, QTabWidget,
                               QVBoxLayout, QWidget)

from app.analysis.plots import (CoefficientPlot, CosinePlot, LayerNormPlot, MagnitudePlot, MaskOverlapPlot,
                                SignConflictPlot, SpectrumPlot, tensor_kind)
from app.document import Document
from app.live import LIVE, OPENING
from app.workers import Job
from engine.analysis import AnalysisReport, analyze, coefficient_matrix
from engine.analysis.coefficients import EFFECTIVE
from engine.analysis.report import TALL_LAMBDA
from engine.errors import EngineInputError
from engine.methods import get_method
from engine.runtime import Progress

AUTO_ANALYZE_PARAMS = 50_000_000  # analyse without asking below this many parameters per model


class AnalysisPanel(QWidget):
    """Analyses of one merge node's task vectors (``set_target``) of ``document``, computed off the UI thread."""

    def __init__(self, document: Document, parent: QWidget | None = None):
        super().__init__(parent)
        self.document = document
        self.recipe = document.recipe
        self.node_id = ""
        self.report: AnalysisReport | None = None
        self.job: Job | None = None
        self._shown = True
        self._stale_params = False
        self.cosine, self.conflicts, self.magnitudes = CosinePlot(), SignConflictPlot(), MagnitudePlot()
        self.overlap, self.norms, self.spectra, self.coefficients = (MaskOverlapPlot(), LayerNormPlot(), SpectrumPlot(),
                                                                     CoefficientPlot())
        self._build()
        document.live.stateChanged.connect(self._on_live_state)
        document.paramsChanged.connect(self._on_params_changed)

    def _build(self) -> None:
        self.title = QLabel("Task vectors", objectName="Title")
        self.status = QLabel("Select a merge node to analyse its task vectors.", objectName="Muted")
        self.tall = QDoubleSpinBox(decimals=2, minimum=0.05, maximum=2.0, singleStep=0.05, value=TALL_LAMBDA)
        self.tall.setToolTip("TALL-mask threshold λ: a task keeps a weight where |τt| ≥ λ·|Στ − τt|")
        self.analyze_button = QPushButton("Analyze", objectName="Primary")
        self.analyze_button.clicked.connect(self.analyze)
        self.export_button = QPushButton("Export…")
        self.export_button.clicked.connect(lambda: self.export())
        head = QHBoxLayout()
        head.setContentsMargins(10, 6, 8, 4)
        head.setSpacing(10)
        head.addWidget(self.title)
        head.addWidget(self.status, 1)
        head.addWidget(QLabel("TALL λ"))
        head.addWidget(self.tall)
        head.addWidget(self.analyze_button)
        head.addWidget(self.export_button)

        self.magnitude_task = QComboBox()
        self.magnitude_task.currentIndexChanged.connect(lambda _i: self._show_magnitudes())
        self.spectrum_kind = QComboBox()
        self.spectrum_kind.currentIndexChanged.connect(lambda _i: self._show_spectra())
        self.coefficient_param = QComboBox()
        self.coefficient_param.currentIndexChanged.connect(lambda _i: self._show_coefficients())
        self.tabs = QTabWidget(documentMode=True)
        pages = (
            (self.cosine, "Cosine", ()),
            (self.conflicts, "Sign conflicts", ()),
            (self.magnitudes, "Magnitudes", (QLabel("Task"), self.magnitude_task)),
            (self.overlap, "TALL masks", ()),
            (self.norms, "Layer norms", ()),
            (self.spectra, "Spectra", (QLabel("Weights"), self.spectrum_kind)),
            (self.coefficients, "Coefficients", (QLabel("Parameter"), self.coefficient_param)),
        )
        for canvas, name, controls in pages:
            self.tabs.addTab(_page(canvas, controls), name)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(head)
        layout.addWidget(self.tabs, 1)

    # ---- target ----------------------------------------------------------------------------------
    def _on_live_state(self, state: str, _message: str) -> None:
        """The live node is the target; once its inputs are resident their size is known and small
        models are analysed right away."""
        live = self.document.live
        if state == OPENING:
            self.set_target(live.node_id)
        elif state == LIVE and live.session is not None and live.session.resident is not None:
            self.set_target(live.node_id, params_per_model=live.session.resident.numel)

    def set_target(self, node_id: str, *, params_per_model: int | None = None) -> None:
        """Analyse the document's ``node_id`` (a merge node with a base); small models start right away."""
        self.node_id = node_id
        self.title.setText(f"Task vectors of “{node_id}”")
        self._show_coefficient_choices()
        if params_per_model is not None and params_per_model <= AUTO_ANALYZE_PARAMS:
            self.analyze()
        else:
            self.status.setText("Press Analyze to read the inputs once and compute the statistics.")

    def analyze(self) -> Job | None:
        """Start the analysis job (replacing one that runs)."""
        if self.node_id not in self.recipe.nodes:
            return None
        if self.job is not None and not self.job.state.finished:
            self.job.cancel()
        snapshot, node_id, lam = self.recipe.copy(), self.node_id, self.tall.value()

        def work(progress, cancel) -> AnalysisReport:
            return analyze(snapshot, node_id, tall_lambda=lam, progress=progress, cancel=cancel)

        job = self.document.jobs.submit(f"Analyse {node_id}", work, kind="evaluate", heavy=False)
        job.progressed.connect(self._on_progress)
        job.succeeded.connect(self._on_report)  # bound slots: Qt drops them when the panel is destroyed
        job.failed.connect(self._on_failed)
        self.job = job
        self.status.setText("Analysing…")
        return job

    def _on_report(self, report: AnalysisReport) -> None:
        if self.sender() is self.job:  # a superseded analysis is ignored
            self.show_report(report)

    def _on_failed(self, message: str) -> None:
        self.status.setText(f"⚠ {message}")

    def _on_progress(self, p: Progress) -> None:
        self.status.setText(f"{p.phase} · {p.fraction:.0%}")

    # ---- showing ---------------------------------------------------------------------------------
    def show_report(self, report: AnalysisReport) -> None:
        self.report = report
        n = len(report.keys)
        self.status.setText(f"{n} task vectors · {len(report.norms.layers)} layer groups · "
                            f"{self._density_text(report.conflicts.density)}")
        self.cosine.set_data(report.cosines, report.keys)
        self.conflicts.set_data(report.conflicts)
        self.overlap.set_data(report.overlap)
        self.norms.set_data(report.norms, report.keys)
        for box, items in ((self.magnitude_task, ["all tasks", *report.keys]),
                           (self.spectrum_kind, ["all", *sorted({tensor_kind(k) for k in report.spectra.values})])):
            box.blockSignals(True)
            box.clear()
            box.addItems(items)
            box.blockSignals(False)
        self._show_magnitudes()
        self._show_spectra()
        self._show_coefficients()

    def _density_text(self, density: float) -> str:
        """What the trim thresholds drawn stand for: the node's own density, or TIES's default for
        comparison when the node's method does not trim."""
        node = self.recipe.nodes.get(self.node_id)
        try:
            spec = get_method(str(node.params.get("method", ""))) if node is not None else None
        except EngineInputError:
            spec = None
        if spec is not None and any(p.name == "density" for p in spec.params):
            return f"{spec.label} density {density:g}"
        name = spec.label if spec is not None else "this node"
        return f"trim shown at TIES's default density {density:g} for comparison ({name} does not trim)"

    def _show_magnitudes(self) -> None:
        if self.report is not None:
            task = self.magnitude_task.currentText()
            self.magnitudes.set_data(self.report.magnitudes, self.report.keys, "" if task == "all tasks" else task)

    def _show_spectra(self) -> None:
        if self.report is not None:
            kind = self.spectrum_kind.currentText()
            self.spectra.set_data(self.report.spectra, "" if kind in ("all", "") else kind)

    def _show_coefficient_choices(self) -> None:
        """List the node's per-model / per-layer parameters (the method may have changed), keeping the choice."""
        current = self.coefficient_param.currentText()
        self.coefficient_param.blockSignals(True)
        self.coefficient_param.clear()
        node = self.recipe.nodes.get(self.node_id)
        if node is not None:
            try:
                spec = get_method(node.params.get("method", ""))
            except EngineInputError:
                spec = None
            if spec is not None:
                numeric = [p for p in spec.params if p.type in ("float", "int") and (p.per_model or p.layerwise)]
                numeric.sort(key=lambda p: not isinstance(node.params.get(p.name), (list, dict)))
                self.coefficient_param.addItems(([EFFECTIVE] if spec.linear is not None else [])
                                                + [p.name for p in numeric])
        if self.coefficient_param.findText(current) >= 0:
            self.coefficient_param.setCurrentText(current)
        self.coefficient_param.blockSignals(False)
        self._show_coefficients()

    def _show_coefficients(self) -> None:
        name = self.coefficient_param.currentText()
        node = self.recipe.nodes.get(self.node_id)
        if not name or node is None:
            self.coefficients.set_data(None)
            return
        layers = len(self.report.norms.layers) - ("other" in self.report.norms.layers) if self.report else 0
        try:
            matrix = coefficient_matrix(get_method(node.params.get("method", "")), node.params,
                                        self.recipe.inputs(self.node_id, "models"), max(1, layers), name)
        except EngineInputError as exc:
            self.coefficients.placeholder = str(exc)
            matrix = None
        self.coefficients.set_data(matrix)

    def _on_params_changed(self, node_id: str, _key: str) -> None:
        """The target's parameters changed: redraw the coefficient view (the statistics do not depend on
        them) now if the panel is shown, else when it is shown again."""
        if node_id != self.node_id:
            return
        if self._shown:
            self._show_coefficient_choices()
        else:
            self._stale_params = True

    def set_shown(self, shown: bool) -> None:
        """Whether the panel can be seen (a dock tabbed behind another cannot): while it cannot, parameter
        edits only mark the coefficient view for a redraw when it is shown again."""
        self._shown = shown
        if shown and self._stale_params:
            self._stale_params = False
            self._show_coefficient_choices()

    def export(self, path: str | Path | None = None) -> Path | None:
        canvas = self.canvases()[self.tabs.currentIndex()]
        if path is None:
            chosen, _ = QFileDialog.getSaveFileName(self, "Export plot", str(Path.home() / "weightsmith-analysis.png"),
                                                    "PNG (*.png);;SVG (*.svg)")
            if not chosen:
                return None
            path = chosen
        return canvas.export(path)

    def canvases(self) -> list:
        """The plots, in tab order."""
        return [self.cosine, self.conflicts, self.magnitudes, self.overlap, self.norms, self.spectra, self.coefficients]

    def restyle(self) -> None:
        for canvas in self.canvases():
            canvas.restyle()


def _page(canvas: QWidget, controls: Any) -> QWidget:
    page = QWidget()
    layout = QVBoxLayout(page)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(0)
    if controls:
        bar = QHBoxLayout()
        bar.setContentsMargins(8, 4, 8, 0)
        for c in controls:
            bar.addWidget(c)
        bar.addStretch(1)
        layout.addLayout(bar)
    layout.addWidget(canvas, 1)
    return page
