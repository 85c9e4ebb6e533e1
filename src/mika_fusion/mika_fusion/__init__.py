"""Fusion of the face and voice emotion results into one debounced state."""
