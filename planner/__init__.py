"""Problem model: catalogs, workloads, capacities, plans and the independent plan checker."""
