"""Bringup of Mika perception: the node graph, shared by the launch file and the runner."""
