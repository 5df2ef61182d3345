"""The words of the HTML report: the introduction and the section list, whose titles and
one-paragraph definitions (with the papers they come from) are declared by each registered
analysis, so that a report read on its own says what each number and figure means."""

from __future__ import annotations

__all__ = ["SECTIONS", "INTRO", "EPOCHS", "SWEEP", "report_sections"]

#: Shown under the title. Tags: [reconstruction] = robustlab's choice where the papers are silent.
INTRO = (
    "Logits z, probabilities p = softmax(z), label y; every analysis runs the delivered model "
    "in eval mode on the same seeded test images for every run. [reconstruction] marks "
    "robustlab's choices where the papers do not fix the definition."
)

#: The report sections after the analyses': numbers logged per epoch, and eps sweeps.
EPOCHS = ("epochs", "Over training epochs", "Numbers logged once per epoch in metrics.jsonl.")
SWEEP = (
    "sweep",
    "Robust accuracy against eps",
    "Robust accuracy (correct on the clean input and under the attack or the per-sample "
    "worst case of an ensemble) at each eps of robustlab eval --eps-sweep; eps 0 is the "
    "clean accuracy.",
)


def report_sections() -> list[tuple[str, str, str]]:
    """``(section key, title, definition)`` in page order: every registered analysis's sections
    (the words live with each analysis, ``robustlab.analysis.registered``), then epochs and the
    eps sweep."""
    from robustlab.analysis.base import registered_analyses

    return [sec for a in registered_analyses() for sec in a.report_sections()] + [EPOCHS, SWEEP]


#: The sections of the built-in analyses (and epochs, sweep) as the page shows them.
SECTIONS: list[tuple[str, str, str]] = report_sections()
