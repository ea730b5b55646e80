"""One adapter per domain library. Each patches its library only at the scoring step, through the
library's own hooks, and calls ``embsym_lib.similarity`` for every score."""
