"""Figures and the self-contained HTML report, drawn from analysis arrays."""
