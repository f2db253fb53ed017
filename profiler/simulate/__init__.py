"""`gpumix simulate`: a discrete-event simulation of a whole plan. steps (step times and KV
capacity from a profile fit or the roofline), engine (the runtime's continuous batching on a
clock; sharing sets stepped in turn), run (inputs, routing, units across processes), report
(validate's schema and verdict), maxutil (`--find-max-utilization`)."""
