"""`gpumix validate`: a plan's groups under their planned load, and the verdict."""
