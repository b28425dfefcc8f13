"""Evaluation: prompt protocols, scoring cases on labelled volumes, reports and overlays."""
