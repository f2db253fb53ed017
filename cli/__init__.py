"""The typer CLI (`gpumix`); it only calls planner/, profiler/ and solvers/."""
