"""metalearn: few-shot speech emotion recognition in which every speaker is a task."""

__version__ = "0.1.0"
