"""Training tools for the face model (ROS-free)."""
