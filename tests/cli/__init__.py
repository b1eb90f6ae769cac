"""Tests of the `masklet` command's answers to bad input."""
