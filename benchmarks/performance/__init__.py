"""Performance measurements: throughput, memory, overheads, scaling and an outside baseline (trl).

Kept free of imports: ``trl_compare``'s trl side runs this package in a virtualenv without pxpo-gym."""
