"""The student demo: one episode, every step printed, and a picture."""
