"""From decoded frames to output frames: window planning, timing, the run loop."""
