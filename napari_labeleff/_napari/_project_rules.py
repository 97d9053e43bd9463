"""The project's rules in the project panel (issue 21): the rules the project holds
(``rules.json``), the rules learned from its accepted masks with their support, and
accepting or rejecting each proposal.

Learning reads every accepted mask, so it runs in the background (its own
:class:`~._worker.Runner`) on a read-only view of the project; accepting writes
``rules.json`` through the panel's (writer) project on the GUI thread. Accepted rules
also join the open project volume's own rules (the classes panel's rules box), which is
what refine enforces; a volume opened without rules of its own starts with the
project's.
"""

from __future__ import annotations

from napari.utils.notifications import show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._errors import LabelEffError
from ._project_training import if_alive
from ._worker import Runner, report_error

#: Share of the accepted masks a relation must hold in to be proposed.
MIN_SUPPORT = 0.8


def learn_rules(folder: str, min_support: float) -> list:
    """Proposals learned from the accepted masks of the project in ``folder``
    (``Project.propose_rules``), on a read-only view of it (worker side)."""
    from ..cohort import Project

    view = Project.open(folder, read_only=True)
    try:
        return view.propose_rules(min_support=min_support)
    finally:
        view.close()


class _Idle:
    """The ``state`` this section's Runner toggles (nothing else waits on it)."""

    busy = False

    def set_busy(self, busy: bool) -> None:
        self.busy = busy


class ProjectRulesSection(QWidget):
    """Project rules and learned proposals, inside the project panel.

    Parameters
    ----------
    panel : ProjectPanel
        Its ``project`` (the writer), ``state`` (the open volume's session) and the
        main widget's rules box.
    """

    def __init__(self, panel, parent: QWidget | None = None):
        super().__init__(parent)
        self.panel = panel
        self.runner = Runner(_Idle())
        self.proposals: list = []
        self.rules_label = QLabel("project rules: -")
        self.rules_label.setWordWrap(True)
        self.support = QDoubleSpinBox()
        self.support.setRange(0.5, 1.0)
        self.support.setSingleStep(0.05)
        self.support.setValue(MIN_SUPPORT)
        self.support.setToolTip("propose relations that hold in at least this share of "
                                "the accepted masks")
        self.learn_btn = QPushButton("Learn rules")
        self.learn_btn.setToolTip("Propose the relations that hold in the project's "
                                  "accepted masks, with their support")
        self.list = QListWidget()
        self.list.setMaximumHeight(7 * self.list.fontMetrics().height())
        self.accept_btn = QPushButton("Accept ticked")
        self.accept_btn.setToolTip("Add the ticked proposals to the project's rules and to "
                                   "the open volume's (unticked ones are rejected)")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.rules_label)
        row = QHBoxLayout()
        row.addWidget(QLabel("min support"))
        row.addWidget(self.support)
        row.addWidget(self.learn_btn)
        lay.addLayout(row)
        lay.addWidget(self.list)
        lay.addWidget(self.accept_btn)
        lay.addWidget(self.status)
        self.learn_btn.clicked.connect(self.learn)
        self.accept_btn.clicked.connect(self.accept_checked)
        self.refresh()

    @property
    def _closed(self) -> bool:  # the panel's widgets are gone (``if_alive``)
        return self.panel._closed

    @_closed.setter
    def _closed(self, value: bool) -> None:
        self.panel._closed = value

    # ---- view ----------------------------------------------------------------------------
    @if_alive
    def refresh(self) -> None:
        """Show the project's rules; enable what the project allows."""
        p = self.panel.project
        writable = p is not None and not p.read_only
        self.learn_btn.setEnabled(p is not None and not self.runner.running)
        self.accept_btn.setEnabled(writable and bool(self.proposals))
        if p is None:
            self.rules_label.setText("project rules: -")
            self._show([])
            return
        try:
            rules = p.rules()
        except LabelEffError as err:
            self.rules_label.setText(f"project rules: {err}")
            return
        if rules is None:
            self.rules_label.setText("project rules: none (learn them from accepted masks)")
        else:
            self.rules_label.setText("project rules: " + "; ".join(rules.text(r) for r in rules))

    @if_alive
    def _say(self, text: str) -> None:
        self.status.setText(text)

    def clear(self) -> None:
        """Forget the proposals (the project closed)."""
        self._show([])
        self.status.setText("")

    def _show(self, proposals) -> None:
        self.proposals = list(proposals)
        self.list.clear()
        for q in self.proposals:
            item = QListWidgetItem(q.text)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            full = q.support[0] == q.support[1]
            item.setCheckState(Qt.CheckState.Checked if full else Qt.CheckState.Unchecked)
            self.list.addItem(item)

    def checked(self) -> list:
        """The ticked proposals."""
        return [q for i, q in enumerate(self.proposals)
                if self.list.item(i).checkState() == Qt.CheckState.Checked]

    # ---- learn ----------------------------------------------------------------------------
    def learn(self) -> bool:
        """Propose rules from the accepted masks, in the background."""
        p = self.panel.project
        if p is None:
            return False
        self.status.setText("learning from the accepted masks…")
        started = self.runner.start(learn_rules, str(p.folder), float(self.support.value()),
                                    desc="Learn rules", on_returned=self._on_learned,
                                    on_failed=lambda err: self._say(f"learning failed: {err}"),
                                    on_finished=lambda cancelled: self.refresh())
        self.refresh()
        return started

    @if_alive
    def _on_learned(self, proposals) -> None:
        if self.panel.project is None:
            return
        self._show(proposals)
        self.status.setText(
            f"{len(proposals)} proposal(s): tick those that are true anatomy, then accept"
            if proposals else "no relation holds in enough accepted masks")
        self.refresh()

    # ---- accept ---------------------------------------------------------------------------
    def accept_checked(self) -> bool:
        """Add the ticked proposals to the project's rules and the open volume's."""
        p = self.panel.project
        chosen = self.checked()
        if p is None or not chosen:
            show_info("Rules: tick at least one proposal")
            return False
        try:
            rules = p.accept_rule_proposals(chosen)
        except LabelEffError as err:
            report_error(err, "Accept rules")
            return False
        self._show([q for q in self.proposals if q not in chosen])
        self.status.setText(f"accepted {len(chosen)} rule(s)")
        self.refresh()
        self.share_with_volume(rules)
        return True

    def share_with_volume(self, rules, *, only_if_empty: bool = False) -> None:
        """Merge the project's ``rules`` into the open project volume's own rules (the
        rules box; what refine enforces). ``only_if_empty``: only a volume without
        rules of its own takes them (when it opens)."""
        session = self.panel.state.session
        if self.panel.vid is None or session is None or rules is None or session.read_only:
            return
        try:
            own = session.rules_object()
            if own is not None and only_if_empty:
                return
            names = [c.name for c in session.classes[1:]]
            mine = rules.for_classes(names)
            merged = mine if own is None else own.added(*[r for r in mine if r not in own.rules])
            session.set_rules(merged)
        except LabelEffError as err:
            report_error(err, "Project rules")
            return
        box = getattr(getattr(self.panel.widget, "classes_panel", None), "rules_box", None)
        if box is not None:
            box.refresh()
