"""Governance: policy gate, slices, champion vs challenger, model cards, audit trail (plain Python)."""
