"""Shared pieces of Mika perception: emotion labels (ROS-free) and node helpers."""
