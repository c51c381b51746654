"""The adversarial pass (experiments/adversarial.py): its harness and its attacks, one module per class."""
