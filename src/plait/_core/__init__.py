"""plait's microkernel: clocks, timers, the reactor, tasks, cancellation, the loop."""
