"""Omni-Preference synthesis: strong/weak generators, two teachers judging in both orders, consensus and rule filters.

Stages and their files are described in `pipeline`; the command line in `__main__`.
"""
