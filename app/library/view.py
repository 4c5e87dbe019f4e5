"""The Library panel: add checkpoints (drop or Open), inspect them off the UI thread, pick a base,
see what fits it, and drag entries onto the graph."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from PySide6.QtCore import QItemSelectionModel, QModelIndex, QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import (QAction, QDragEnterEvent, QDropEvent, QFont, QFontMetrics, QGuiApplication, QPainter,
                           QPaintEvent, QPalette)
from PySide6.QtWidgets import (QAbstractItemView, QApplication, QFileDialog, QHBoxLayout, QHeaderView, QMenu,
                               QSplitter, QStyle, QStyledItemDelegate, QStyleOptionViewItem, QTableView, QToolButton,
                               QVBoxLayout, QWidget)

from app import theme
from app.library.details import DetailsPanel
from app.library.inspect import Inspection, compatibility, inspect_path
from app.library.model import NAME, FormatRole, LibraryModel, PathRole, display_name
from app.workers import JobManager

FILE_FILTER = ("Checkpoints (*.safetensors *.bin *.pt *.pth *.ckpt *.index.json);;"
               "All files (*)")


class NameDelegate(QStyledItemDelegate):
    """The Name column: the icon, the name, and the format (and architecture) muted underneath."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        text, opt.text = opt.text, ""
        style = opt.widget.style() if opt.widget else QApplication.style()
        style.drawControl(QStyle.CE_ItemViewItem, opt, painter, opt.widget)
        rect = style.subElementRect(QStyle.SE_ItemViewItemText, opt, opt.widget).adjusted(2, 3, -2, -3)
        half = rect.height() // 2
        painter.save()
        painter.setFont(opt.font)
        painter.setPen(opt.palette.color(QPalette.Text))
        top = QRect(rect.left(), rect.top(), rect.width(), half)
        painter.drawText(top, Qt.AlignLeft | Qt.AlignVCenter,
                         opt.fontMetrics.elidedText(text, Qt.ElideMiddle, rect.width()))
        small = QFont(opt.font)
        small.setBold(False)
        small.setPointSizeF(opt.font.pointSizeF() * 0.85)
        painter.setFont(small)
        painter.setPen(theme.color("muted"))
        bottom = QRect(rect.left(), rect.top() + half, rect.width(), rect.height() - half)
        painter.drawText(bottom, Qt.AlignLeft | Qt.AlignVCenter,
                         QFontMetrics(small).elidedText(str(index.data(FormatRole) or ""), Qt.ElideRight, rect.width()))
        painter.restore()


class LibraryTable(QTableView):
    """The entry list: drags rows out as checkpoint MIME data; shows how to add files when empty."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setDragDropMode(QAbstractItemView.DragOnly)
        self.setDragEnabled(True)
        self.setAcceptDrops(False)
        self.setShowGrid(False)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.setContextMenuPolicy(Qt.CustomContextMenu)
        self.verticalHeader().hide()
        self.verticalHeader().setDefaultSectionSize(40)
        self.setItemDelegateForColumn(NAME, NameDelegate(self))
        self.setIconSize(QSize(18, 18))

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        if self.model() is not None and self.model().rowCount():
            return
        painter = QPainter(self.viewport())
        rect = self.viewport().rect().adjusted(24, 0, -24, 0)
        icon_rect = QRect(rect.center().x() - 20, rect.center().y() - 52, 40, 40)
        theme.icon("library", "muted").paint(painter, icon_rect)
        painter.setPen(theme.color("muted"))
        painter.drawText(rect.adjusted(0, rect.height() // 2 - 4, 0, 0),
                         Qt.AlignHCenter | Qt.AlignTop | Qt.TextWordWrap,
                         "Drop checkpoints here\nsafetensors · .bin/.pt · Hugging Face folders · LoRA adapters")
        painter.end()


class LibraryPanel(QWidget):
    """Owns the library model; reports errors and "add to graph" requests to the window."""

    errorOccurred = Signal(str, str)
    inspectFailed = Signal(str, str)  # path, reason: every failed inspection, reported or not
    addToGraphRequested = Signal(list)

    def __init__(self, jobs: JobManager, parent: QWidget | None = None):
        super().__init__(parent)
        self.jobs = jobs
        self.model = LibraryModel(self)
        self.table = LibraryTable()
        self.table.setModel(self.model)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(NAME, QHeaderView.Stretch)
        header.setHighlightSections(False)
        self.details = DetailsPanel()

        self.add_files_action = self._action("add-file", "Add Checkpoint Files…", self.browse_files)
        self.add_folder_action = self._action("add-folder", "Add Checkpoint Folder…", self.browse_folder)
        self.base_action = self._action("base", "Use as Base", self.use_selected_as_base)
        self.to_graph_action = self._action("add", "Add to Graph", self._request_graph)
        self.remove_action = self._action("remove", "Remove from Library", self.remove_selected)
        bar = QHBoxLayout()
        bar.setContentsMargins(4, 4, 4, 0)
        bar.setSpacing(2)
        for act in (self.add_files_action, self.add_folder_action, None, self.base_action, self.to_graph_action,
                    self.remove_action):
            if act is None:
                bar.addSpacing(10)
                continue
            button = QToolButton()
            button.setDefaultAction(act)
            bar.addWidget(button)
        bar.addStretch(1)

        split = QSplitter(Qt.Vertical, childrenCollapsible=False)
        split.addWidget(self.table)
        split.addWidget(self.details)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(bar)
        layout.addWidget(split, 1)
        self.setAcceptDrops(True)

        self.table.selectionModel().selectionChanged.connect(self._update_details)
        self.table.doubleClicked.connect(lambda _i: self._request_graph())
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.model.dataChanged.connect(self._on_data_changed)
        self._update_actions()

    def _action(self, icon: str, text: str, slot) -> QAction:
        act = QAction(theme.icon(icon), text, self)
        act.setToolTip(text.rstrip("…"))
        act.triggered.connect(slot)
        return act

    # ---- adding and removing -----------------------------------------------------------------
    def add_paths(self, paths: list[str | Path], *, report: bool = True) -> None:
        """Inspect and add checkpoints (files or folders); unreadable ones are not added. Each is
        announced with ``inspectFailed``; when ``report`` (the user asked for them), once every path
        of the call is inspected, one ``errorOccurred`` names every file skipped and why."""
        batch = SimpleNamespace(total=len(paths), pending=0, skipped=[], report=report)
        for p in paths:
            path = str(Path(p).expanduser().resolve())
            if self.model.add_pending(path):
                batch.pending += 1
                job = self.jobs.submit(f"Inspect {display_name(path)}",
                                       lambda _progress, _cancel, p=path: inspect_path(p),
                                       kind="inspect", visible=False, heavy=False)
                job.succeeded.connect(self._on_inspected)
                job.succeeded.connect(lambda _i, b=batch: self._batch_step(b))
                job.cancelled.connect(lambda b=batch: self._batch_step(b))
                job.failed.connect(lambda msg, p=path, b=batch: self._on_inspect_failed(p, msg, b))
        self._update_actions()

    def _batch_step(self, batch: SimpleNamespace) -> None:
        """One path of an ``add_paths`` call is inspected; after the last, report what was skipped."""
        batch.pending -= 1
        if batch.pending or not batch.skipped or not batch.report:
            return
        if batch.total == 1:
            path, message = batch.skipped[0]
            self.errorOccurred.emit(f"Cannot add {display_name(path)}", message)
            return
        lines = "\n".join(f"• {Path(path).name}: {message}" for path, message in batch.skipped)
        self.errorOccurred.emit(f"Skipped {len(batch.skipped)} of {batch.total} files",
                                f"These were not added to the library:\n{lines}")

    def _on_inspected(self, inspection: Inspection) -> None:
        if self.model.entry(inspection.path) is None:
            return
        self.model.set_inspection(inspection)
        if not self.table.selectionModel().hasSelection():
            self.select_path(inspection.path)
        if self.model.base_path is None:
            self._choose_base_if_needed()
        elif inspection.path == self.model.base_path:
            self._check_fits([e.path for e in self.model.ready()])
        else:
            self._check_fits([inspection.path])
        self._update_actions()

    def _on_inspect_failed(self, path: str, message: str, batch: SimpleNamespace) -> None:
        self.model.remove(path)
        self._update_actions()
        batch.skipped.append((path, message))
        self.inspectFailed.emit(path, message)
        self._batch_step(batch)

    def remove_selected(self) -> None:
        for path in self.selected_paths(include_pending=True):
            self.model.remove(path)
        self._choose_base_if_needed()
        self._update_actions()

    def clear(self) -> None:
        for path in self.model.paths():
            self.model.remove(path)
        self._update_actions()

    def browse_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add checkpoint files", "", FILE_FILTER)
        self.add_paths(files)

    def browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a checkpoint folder (Hugging Face model or LoRA adapter)")
        if folder:
            self.add_paths([folder])

    # ---- base and fits -----------------------------------------------------------------------
    def set_base(self, path: str | None) -> None:
        """Check every other entry against ``path`` (in a worker)."""
        self.model.set_base(path)
        self._check_fits([e.path for e in self.model.ready()])
        self._update_details()

    def use_selected_as_base(self) -> None:
        paths = self.selected_paths()
        if paths:
            self.set_base(paths[0])

    def _choose_base_if_needed(self) -> None:
        """Without a chosen base, the first full model in list order becomes it (once it is inspected)."""
        if self.model.base_path is not None:
            return
        for e in self.model.entries:
            if e.pending:
                return
            if e.inspection.summary.kind == "model":
                self.set_base(e.path)
                return

    def _check_fits(self, paths: list[str]) -> None:
        base = self.model.base_entry()
        if base is None or base.pending:
            return
        others = {p: self.model.entry(p).inspection.headers for p in paths
                  if p != base.path and self.model.entry(p) is not None and not self.model.entry(p).pending}
        if not others:
            return
        base_path, headers = base.path, base.inspection.headers
        job = self.jobs.submit("Check fits", lambda _p, _c: compatibility(headers, others),
                               kind="inspect", visible=False, heavy=False)
        job.succeeded.connect(lambda reports: self.model.set_compat(base_path, reports))

    # ---- queries and persistence -------------------------------------------------------------
    def selected_paths(self, include_pending: bool = False) -> list[str]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [self.model.entries[r].path for r in rows if include_pending or not self.model.entries[r].pending]

    def select_path(self, path: str) -> None:
        row = self.model.row_of(path)
        if row >= 0:
            self.table.selectionModel().select(self.model.index(row, 0),
                                               QItemSelectionModel.ClearAndSelect | QItemSelectionModel.Rows)

    @property
    def pending(self) -> bool:
        """Whether some entry is still being inspected."""
        return any(e.pending for e in self.model.entries)

    def to_json(self) -> dict:
        return {"paths": self.model.paths(), "base": self.model.base_path}

    def load_json(self, data: dict, extra_paths: list[str] = ()) -> None:
        """Replace the library with a project's list (plus ``extra_paths``, e.g. the graph's checkpoints)
        and its base."""
        self.clear()
        self.model.set_base(None)
        paths = [p for p in [*data.get("paths", []), *extra_paths] if Path(p).exists()]
        base = data.get("base")
        if base and Path(base).exists():
            self.model.base_path = str(Path(base).resolve())
        self.add_paths(paths)

    # ---- UI plumbing -------------------------------------------------------------------------
    def _update_details(self, *_args) -> None:
        paths = self.selected_paths(include_pending=True)
        entry = self.model.entry(paths[0]) if len(paths) == 1 else None
        self.details.show_entry(entry, self.model.base_entry())
        self._update_actions()

    def _on_data_changed(self, top_left: QModelIndex, _bottom_right: QModelIndex) -> None:
        if self.details.entry is not None and top_left.data(PathRole) == self.details.entry.path:
            self._update_details()

    def _update_actions(self) -> None:
        ready = self.selected_paths()
        self.base_action.setEnabled(len(ready) == 1)
        self.to_graph_action.setEnabled(bool(ready))
        self.remove_action.setEnabled(bool(self.selected_paths(include_pending=True)))

    def _request_graph(self) -> None:
        paths = self.selected_paths()
        if paths:
            self.addToGraphRequested.emit(paths)

    def _context_menu(self, pos: QPoint) -> None:
        if not self.selected_paths(include_pending=True):
            return
        menu = QMenu(self)
        menu.addAction(self.base_action)
        menu.addAction(self.to_graph_action)
        copy = menu.addAction(theme.icon("copy"), "Copy Path")
        copy.triggered.connect(lambda: QGuiApplication.clipboard().setText("\n".join(self.selected_paths(True))))
        menu.addSeparator()
        menu.addAction(self.remove_action)
        menu.popup(self.table.viewport().mapToGlobal(pos))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() and all(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        self.dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.add_paths(paths)
