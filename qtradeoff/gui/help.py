"""Help → Quick start and About: what the window is for and the few steps from a model file to a decision."""

from __future__ import annotations

from PySide6.QtWidgets import QMenu, QMessageBox, QWidget

QUICK_START = """<h3>Quick start</h3>
<ol>
<li><b>Open a model</b>: drop a file on the window or use File → Open model… (PyTorch <code>.pt</code>/<code>.pth</code>
state dicts or pickles, <code>.safetensors</code>, TorchScript, <code>torch.export</code> programs). Files that
would run code ask for your consent first. Started without a file, the window opens the bundled digits classifier.</li>
<li><b>Data</b>: the sample comes with its data; for your own model use File → Open data… or Open dataset folder…
The fp32 baseline is evaluated first; every later point is compared with it.</li>
<li><b>Edit</b>: the sliders set the defaults (weight and activation precision, pruning); double-click a cell of the
layer table to override one layer; tick a layer to lock it against automatic search. Each change is evaluated in the
background and lands as a point on the plot; Edit → Undo steps back.</li>
<li><b>Read the plot</b>: accuracy (with its confidence interval) against latency or memory; the line is the Pareto
frontier. Estimated latencies are drawn differently from measured ones. Hover a point for its figures; click it to load
its configuration.</li>
<li><b>Explore</b>: the Explore panel runs sensitivity analysis and searches (greedy, random, evolutionary) under your
accuracy constraint.</li>
<li><b>Keep the answer</b>: File → Export configuration… writes the chosen configuration as JSON; the same file
drives the headless CLI (<code>qtradeoff-cli evaluate</code>, <code>sweep</code>).</li>
</ol>
<p>Esc cancels the running evaluation; Ctrl+M times the current configuration on real kernels.</p>
"""

ABOUT = ("<b>qtradeoff</b> explores the accuracy–speed–size trade-offs of quantizing and pruning a neural network. "
         "Every figure says whether it is measured or estimated.")


def add_help_menu(window: QWidget, menu: QMenu) -> None:
    menu.addAction("Quick start", lambda: show_quick_start(window)).setToolTip("The steps from a model to a decision.")
    menu.addAction("About qtradeoff", lambda: QMessageBox.about(window, "About qtradeoff", ABOUT))


def show_quick_start(window: QWidget) -> QMessageBox:
    box = QMessageBox(window)
    box.setWindowTitle("qtradeoff quick start")
    box.setTextFormat(box.textFormat().RichText)
    box.setText(QUICK_START)
    box.setStandardButtons(QMessageBox.Close)
    box.setModal(False)
    box.show()
    return box
