"""Fault injection: killed workers and runs, concurrent runs, full disks, bad inputs, hostile names.

Every test states in its docstring what it injects and what must hold afterwards.
"""
