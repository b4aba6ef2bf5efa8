"""Shared edge code for learnstream: settings, topic catalogue, command line."""
