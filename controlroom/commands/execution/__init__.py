"""The worker's side: one attempt executed, its writes delivered once, its outputs, and the reaper."""
