"""Helpers the tests share (never tests themselves): servers, hand-made states, child processes, shared data."""
