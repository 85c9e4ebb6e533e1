"""Offline evaluation of Mika perception by rosbag replay."""
