"""`gpumix validate`: the flow (run.py), one driver for dedicated and sharing groups (groups.py)."""
