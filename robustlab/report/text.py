"""The words of the HTML report: section titles, one-paragraph definitions and the papers
they come from, so that a report read on its own says what each number and figure means."""

from __future__ import annotations

__all__ = ["SECTIONS", "INTRO"]

_LOGITS = "Seguin et al., Understanding the Logit Distributions of Adversarially-Trained DNNs"
_UNCERTAINTY = "Jin et al., Rethinking Uncertainty in Deep Learning (arXiv:2011.13538)"
_FISHER = (
    "Shi et al., Understanding Adversarial Behavior of DNNs by Disentangling Non-Robust and "
    "Robust Components in Performance Metric (arXiv:1906.02494)"
)
_DYART = (
    "Xu et al., Exploring and Exploiting Decision Boundary Dynamics for Adversarial Robustness "
    "(arXiv:2302.03015)"
)

#: Shown under the title. Tags: [reconstruction] = robustlab's choice where the papers are silent.
INTRO = (
    "Logits z, probabilities p = softmax(z), label y; every analysis runs the delivered model "
    "in eval mode on the same seeded test images for every run. [reconstruction] marks "
    "robustlab's choices where the papers do not fix the definition."
)

#: (section key, title, definition) in page order.
SECTIONS: list[tuple[str, str, str]] = [
    (
        "logits",
        "Logit statistics",
        "Per image: max logit max_k z_k; gap z_(1) - z_(2) (top-1 minus top-2 logit); gap to "
        "the mean z_(1) - mean_k z_k [reconstruction]; confidence max_k p_k; entropy H(p). "
        f"{_LOGITS} (arXiv:2108.12001) report that adversarial training lowers the max logit "
        "and the gap.",
    ),
    (
        "disagreement",
        "Confidence disagreement",
        "Each model's confidence as percentile ranks over the same images; Spearman "
        "correlation of the ranks and the images ranked most differently [reconstruction]. "
        "The same paper (arXiv:2108.12001) reports that adversarially trained and standard "
        "models disagree about which samples are confident.",
    ),
    (
        "margins",
        "Minimal-perturbation margins",
        "R(x) = min |x' - x|_p with x' in [0,1] on the decision boundary "
        "(z_y = max_{k!=y} z_k), found by the FAB boundary solver and verified; 0 for "
        f"misclassified images. A point is robust at eps iff R(x) > eps. {_DYART}.",
    ),
    (
        "dynamics",
        "Decision-boundary dynamics",
        "Speed of the boundary relative to each point under one training step of an objective "
        "(parameter velocity -grad L): dR/dt = <grad_theta phi(x^), theta'> / "
        "|grad_x phi(x^)|_q at the closest boundary point x^, with phi = z_y - max_{k!=y} z_k "
        "and q the dual norm. Negative: the boundary approaches the point. Fractions of "
        f"positive and negative speeds per margin bin (width eps/4). {_DYART}.",
    ),
    (
        "jacobian",
        "Input Jacobian of the logits",
        "Frobenius norm |dz/dx|_F = (sum_k |grad_x z_k|^2)^(1/2) per image (K backward "
        f"passes). {_UNCERTAINTY} find that entropy maximization shrinks it.",
    ),
    (
        "fisher",
        "Input Fisher information",
        "F(x) = sum_k p_k grad_x log p_k grad_x log p_k^T, the quadratic term of "
        "KL(p(x) || p(x + delta)); its Frobenius norm, top eigenvalue and trace per image, "
        "computed from the K x K matrix. Cross-class KL metric: mean KL(p(x_i) || p(x_j)) over "
        "pairs with different labels inside random groups of 10 images [grouping: "
        f"reconstruction]. {_FISHER}.",
    ),
    ("epochs", "Over training epochs", "Numbers logged once per epoch in metrics.jsonl."),
    (
        "sweep",
        "Robust accuracy against eps",
        "Robust accuracy (correct on the clean input and under the attack or the per-sample "
        "worst case of an ensemble) at each eps of robustlab eval --eps-sweep; eps 0 is the "
        "clean accuracy.",
    ),
]
